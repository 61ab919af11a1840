package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
)

// summarizeReports prints, for each group of reports (same scenario, variant,
// mode and label group), every metric's value in each run and its median,
// and how many runs passed each check, as Markdown.
func summarizeReports(paths []string, w io.Writer) error {
	if len(paths) == 0 {
		return fmt.Errorf("--summarize: name the JSON reports to summarise")
	}
	type group struct {
		key     string
		reports []*Report
	}
	var groups []*group
	byKey := map[string]*group{}
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		r := new(Report)
		if err := json.Unmarshal(b, r); err != nil {
			return fmt.Errorf("%s: %w", p, err)
		}
		labelGroup, _, _ := strings.Cut(r.Label, "#")
		key := fmt.Sprintf("%s | %s", r.Scenario, r.Variant)
		if labelGroup != "" {
			key += " | " + labelGroup
		}
		if r.InProcess {
			key += " | IN-PROCESS"
		}
		g := byKey[key]
		if g == nil {
			g = &group{key: key}
			byKey[key] = g
			groups = append(groups, g)
		}
		g.reports = append(g.reports, r)
	}
	for _, g := range groups {
		fmt.Fprintf(w, "### %s (%d runs)\n\n", g.key, len(g.reports))
		var hdr strings.Builder
		hdr.WriteString("| metric | unit |")
		for i := range g.reports {
			fmt.Fprintf(&hdr, " run %d |", i+1)
		}
		hdr.WriteString(" **median** |\n|---|---|")
		for range g.reports {
			hdr.WriteString("---:|")
		}
		hdr.WriteString("---:|\n")
		fmt.Fprint(w, hdr.String())
		var names []string
		units := map[string]string{}
		vals := map[string][]float64{}
		for _, r := range g.reports {
			for _, m := range r.Metrics {
				if _, ok := units[m.Name]; !ok {
					names = append(names, m.Name)
					units[m.Name] = m.Unit
				}
			}
		}
		for _, n := range names {
			fmt.Fprintf(w, "| %s | %s |", n, units[n])
			for _, r := range g.reports {
				cell := "–"
				for _, m := range r.Metrics {
					if m.Name == n {
						cell = fmtValue(m.Value)
						vals[n] = append(vals[n], m.Value)
						break
					}
				}
				fmt.Fprintf(w, " %s |", cell)
			}
			fmt.Fprintf(w, " **%s** |\n", fmtValue(round3(median(vals[n]))))
		}
		fmt.Fprintln(w)
		var checks []string
		seen := map[string]bool{}
		for _, r := range g.reports {
			for _, c := range r.Checks {
				if !seen[c.Name] {
					seen[c.Name] = true
					checks = append(checks, c.Name)
				}
			}
		}
		if len(checks) > 0 {
			fmt.Fprintln(w, "| check | target | got (each run) | passed |\n|---|---|---|---|")
			for _, name := range checks {
				var target string
				var got []string
				pass := 0
				for _, r := range g.reports {
					for _, c := range r.Checks {
						if c.Name == name {
							target = c.Target
							got = append(got, c.Got)
							if c.Pass {
								pass++
							}
						}
					}
				}
				fmt.Fprintf(w, "| %s | %s | %s | %d/%d |\n", name, target, strings.Join(got, "; "), pass, len(got))
			}
			fmt.Fprintln(w)
		}
		for i, r := range g.reports {
			for _, n := range r.Notes {
				fmt.Fprintf(w, "- run %d: %s\n", i+1, n)
			}
			if r.Error != "" {
				fmt.Fprintf(w, "- run %d ERROR: %s\n", i+1, r.Error)
			}
		}
		fmt.Fprintln(w)
	}
	return nil
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}
