// Package lite is a gRPC server over HTTP/2 (h2c, or TLS through
// tls.NewListener) that runs one goroutine per connection.
package lite
