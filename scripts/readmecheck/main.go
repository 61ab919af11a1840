// Command readmecheck runs the README's walkthrough and fails when an output
// differs from what the README shows, so the README cannot rot.
//
// It runs every ```console block that follows a line "<!-- check -->", in
// order, in one bash shell per command with the repository root as working
// directory. A line starting with "$ " is a command (a trailing "\"
// continues it); the lines after it, up to the next command, are its
// expected output (stdout and stderr together). Volatile parts (ids, epochs,
// times, durations) are normalised on both sides before comparing. A block
// preceded by "<!-- check: nooutput -->" runs its commands but ignores
// their output.
//
// It also checks the README's flag table against `presenced -help`.
//
// Usage: go run ./scripts/readmecheck [-presenced bin] README.md
// The daemon must already be running on the README's addresses, and
// grpcurl, presencectl etc. must be on PATH.
package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"time"
)

type step struct {
	line     int // 1-based line of the command
	cmd      string
	want     []string
	outFrom  int // 0-based index of the first output line
	outTo    int // 0-based index past the last output line
	noOutput bool
}

func main() {
	presenced := flag.String("presenced", "", "presenced binary whose -help the flag table must match (skip if empty)")
	update := flag.Bool("update", false, "write the real outputs into the README instead of comparing")
	flag.Parse()
	if flag.NArg() != 1 {
		fmt.Fprintln(os.Stderr, "usage: readmecheck [-presenced bin] [-update] README.md")
		os.Exit(2)
	}
	if err := run(flag.Arg(0), *presenced, *update); err != nil {
		fmt.Fprintln(os.Stderr, "readmecheck:", err)
		os.Exit(1)
	}
}

func run(path, presenced string, update bool) error {
	src, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	steps, err := parse(string(src))
	if err != nil {
		return err
	}
	if len(steps) == 0 {
		return fmt.Errorf("%s has no checked console blocks", path)
	}
	failed := 0
	outputs := make([]string, len(steps))
	for i, s := range steps {
		got, err := execute(s.cmd)
		// HTTP headers end in CRLF; a README has no use for the CR.
		outputs[i] = strings.TrimRight(strings.ReplaceAll(got, "\r\n", "\n"), "\n")
		fmt.Printf("$ %s\n", s.cmd)
		if err != nil {
			fmt.Printf("  (exit: %v)\n", err)
		}
		if s.noOutput || update {
			continue
		}
		g, w := normalize(got), normalize(strings.Join(s.want, "\n"))
		if g != w {
			failed++
			fmt.Printf("--- %s:%d: output differs\n--- want\n%s\n--- got\n%s\n", path, s.line, strings.Join(s.want, "\n"), got)
		}
	}
	if update {
		lines := strings.Split(string(src), "\n")
		for i := len(steps) - 1; i >= 0; i-- {
			s := steps[i]
			if s.noOutput {
				continue
			}
			var out []string
			if outputs[i] != "" {
				out = strings.Split(outputs[i], "\n")
			}
			lines = append(lines[:s.outFrom], append(out, lines[s.outTo:]...)...)
		}
		if err := os.WriteFile(path, []byte(strings.Join(lines, "\n")), 0o644); err != nil {
			return err
		}
		fmt.Printf("readmecheck: wrote %d outputs into %s\n", len(steps), path)
	}
	if presenced != "" {
		if err := checkFlags(string(src), presenced); err != nil {
			return err
		}
	}
	if failed > 0 {
		return fmt.Errorf("%d of %d commands gave output different from %s", failed, len(steps), path)
	}
	fmt.Printf("readmecheck: %d commands, all outputs match %s\n", len(steps), path)
	return nil
}

// parse extracts the checked steps.
func parse(src string) ([]step, error) {
	var steps []step
	lines := strings.Split(src, "\n")
	for i := 0; i < len(lines); i++ {
		marker := strings.TrimSpace(lines[i])
		if marker != "<!-- check -->" && marker != "<!-- check: nooutput -->" {
			continue
		}
		if i+1 >= len(lines) || strings.TrimSpace(lines[i+1]) != "```console" {
			return nil, fmt.Errorf("line %d: a check marker must be followed by a ```console block", i+1)
		}
		i += 2
		var cur *step
		for ; i < len(lines) && strings.TrimSpace(lines[i]) != "```"; i++ {
			l := lines[i]
			if strings.HasPrefix(l, "$ ") {
				if cur != nil {
					cur.outTo = i
					steps = append(steps, *cur)
				}
				cur = &step{line: i + 1, cmd: strings.TrimPrefix(l, "$ "), noOutput: marker != "<!-- check -->"}
				for strings.HasSuffix(cur.cmd, "\\") && i+1 < len(lines) {
					i++
					cur.cmd += "\n" + lines[i]
				}
				cur.outFrom = i + 1
				continue
			}
			if cur == nil {
				return nil, fmt.Errorf("line %d: output before any command", i+1)
			}
			cur.want = append(cur.want, l)
		}
		if cur != nil {
			cur.outTo = i
			steps = append(steps, *cur)
		}
	}
	return steps, nil
}

// execute runs one command in bash, bounded in time. Output goes to a
// file, not a pipe, so a command that starts a background job ("... &")
// returns when bash does.
func execute(cmd string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	f, err := os.CreateTemp("", "readmecheck-*.out")
	if err != nil {
		return "", err
	}
	defer os.Remove(f.Name())
	defer f.Close()
	c := exec.CommandContext(ctx, "bash", "-c", cmd)
	c.Stdout, c.Stderr = f, f
	runErr := c.Run()
	out, err := os.ReadFile(f.Name())
	if err != nil {
		return "", err
	}
	return string(out), runErr
}

var volatile = []struct {
	re   *regexp.Regexp
	repl string
}{
	{regexp.MustCompile(`\b[A-Z2-7]{26}\b`), "<ID>"},
	{regexp.MustCompile(`("(?:epoch|uidEpoch|broadcastEpoch|uid_epoch|broadcast_epoch)": ?")[A-Z2-7]{10}"`), `${1}<EPOCH>"`},
	{regexp.MustCompile(`\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z`), "<TIME>"},
	{regexp.MustCompile(`(?m)^Date: .*$`), "Date: <DATE>"},
	// protojson's random spaces (below) change the body's length too.
	{regexp.MustCompile(`(?m)^Content-Length: \d+$`), "Content-Length: <N>"},
	{regexp.MustCompile(`"reconnectAfter": "[0-9.]+s"`), `"reconnectAfter": "<DURATION>"`},
	{regexp.MustCompile(`duration=[0-9.]+m?s`), "duration=<DURATION>"},
	// protojson puts a space after "," and ":" at random (on purpose);
	// compare without it.
	{regexp.MustCompile(`([,:]) +`), "$1"},
}

func normalize(s string) string {
	s = strings.ReplaceAll(s, "\r\n", "\n")
	// protobuf's error prefix is "proto: " or "proto:\u00a0", chosen per
	// binary on purpose.
	s = strings.ReplaceAll(s, "\u00a0", " ")
	for _, v := range volatile {
		s = v.re.ReplaceAllString(s, v.repl)
	}
	var out []string
	sc := bufio.NewScanner(strings.NewReader(s))
	for sc.Scan() {
		out = append(out, strings.TrimRight(sc.Text(), " \t\r"))
	}
	return strings.TrimSpace(strings.Join(out, "\n"))
}

// checkFlags compares the README's flag table (rows "| `--name` | `default` | ...")
// with the flags presenced reports.
func checkFlags(readme, bin string) error {
	out, _ := exec.Command(bin, "-help").CombinedOutput()
	helpFlag := regexp.MustCompile(`(?m)^  -([a-z0-9-]+)`)
	helpDefault := regexp.MustCompile(`\(default "?([^")]*)"?\)`)
	have := map[string]string{}
	chunks := helpFlag.FindAllStringSubmatchIndex(string(out), -1)
	for i, m := range chunks {
		name := string(out[m[2]:m[3]])
		end := len(out)
		if i+1 < len(chunks) {
			end = chunks[i+1][0]
		}
		def := ""
		if d := helpDefault.FindStringSubmatch(string(out[m[0]:end])); d != nil {
			def = d[1]
		}
		have[name] = def
	}
	if len(have) == 0 {
		return fmt.Errorf("%s -help listed no flags", bin)
	}
	row := regexp.MustCompile("(?m)^\\| `--([a-z0-9-]+)` \\| `([^`]*)` \\|")
	documented := map[string]bool{}
	var errs []string
	for _, m := range row.FindAllStringSubmatch(readme, -1) {
		name, def := m[1], m[2]
		documented[name] = true
		got, ok := have[name]
		switch {
		case !ok:
			errs = append(errs, fmt.Sprintf("README documents --%s, which presenced does not have", name))
		case got != def && !(got == "" && (def == "false" || def == "0" || def == "")):
			errs = append(errs, fmt.Sprintf("README says --%s defaults to %q; presenced says %q", name, def, got))
		}
	}
	for name := range have {
		if !documented[name] {
			errs = append(errs, fmt.Sprintf("flag --%s is missing from the README's flag table", name))
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("flag table out of date:\n  %s", strings.Join(errs, "\n  "))
	}
	fmt.Printf("readmecheck: the flag table matches presenced -help (%d flags)\n", len(have))
	return nil
}
