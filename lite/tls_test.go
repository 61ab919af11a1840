package lite

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"io"
	"math/big"
	"net"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

func selfSigned(t *testing.T) tls.Certificate {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "lite test"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

func TestTLSListener(t *testing.T) {
	s := NewServer(Options{})
	authInfo := make(chan credentials.AuthInfo, 1)
	s.HandleEvents(chatMethod, func(st *Stream) Events {
		p, _ := peer.FromContext(st.Context())
		authInfo <- p.AuthInfo
		return funcEvents{
			msg:    func(b []byte) { st.Send(b) },
			closed: func(error) { st.Finish(nil) },
		}
	})
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	tl := tls.NewListener(l, &tls.Config{Certificates: []tls.Certificate{selfSigned(t)}, NextProtos: []string{"h2"}})
	done := make(chan error, 1)
	go func() { done <- s.Serve(tl) }()
	defer func() { s.Stop(); <-done }()

	creds := credentials.NewTLS(&tls.Config{InsecureSkipVerify: true})
	cc, err := grpc.NewClient(l.Addr().String(), grpc.WithTransportCredentials(creds))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cs := newChat(t, ctx, cc)
	sendString(t, cs, "secret")
	if got := recvString(t, cs); got != "secret" {
		t.Fatal(got)
	}
	cs.CloseSend()
	if err := cs.RecvMsg(new(wrapperspb.StringValue)); err != io.EOF {
		t.Fatal(err)
	}
	ai := <-authInfo
	ti, ok := ai.(credentials.TLSInfo)
	if !ok || ti.State.NegotiatedProtocol != "h2" || !ti.State.HandshakeComplete {
		t.Fatalf("AuthInfo = %#v", ai)
	}
}
