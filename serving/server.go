package serving

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"
)

// idleTimeout closes keep-alive connections idle this long.
const idleTimeout = 2 * time.Minute

// Server runs a handler on a listener with the deadlines of a Config.
type Server struct {
	srv *http.Server
	log *slog.Logger
	// drain bounds the graceful shutdown: requests still running after it
	// are cut.
	drain time.Duration
}

// NewServer returns a server for h; it starts nothing. Its deadlines follow
// cfg.RequestTimeout (T): reading a request's header and body within T,
// answering within 2T (Config.WriteTimeout), idle keep-alive connections
// closed after 2 minutes.
//
// Like NewHandler it panics if cfg.Validate fails.
func NewServer(cfg Config, h http.Handler, log *slog.Logger) *Server {
	if err := cfg.Validate(); err != nil {
		panic(fmt.Sprintf("serving: NewServer: %v", err))
	}
	cfg = cfg.withDefaults()
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	t := cfg.RequestTimeout
	return &Server{
		srv: &http.Server{
			Addr:              cfg.Listen,
			Handler:           h,
			ReadHeaderTimeout: t,
			ReadTimeout:       t,
			WriteTimeout:      cfg.WriteTimeout(),
			IdleTimeout:       idleTimeout,
			MaxHeaderBytes:    64 << 10,
			ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
		},
		log:   log,
		drain: 2 * t,
	}
}

// Run serves on ln until ctx is done, then shuts down gracefully: it stops
// accepting, lets requests in flight finish (for at most twice the request
// timeout, then closes their connections) and returns once every goroutine
// it started has exited. It returns nil after a clean shutdown, or the error
// that stopped serving early. Run takes ownership of ln and may be called
// once.
func (s *Server) Run(ctx context.Context, ln net.Listener) error {
	addr := ln.Addr().String()
	errc := make(chan error, 1)
	go func() { errc <- s.srv.Serve(ln) }()
	s.log.Info("serving: listening", "addr", addr)

	select {
	case err := <-errc:
		return fmt.Errorf("serving: serve on %s: %w", addr, err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.drain)
	defer cancel()
	err := s.srv.Shutdown(sctx)
	if err != nil {
		s.srv.Close() //nolint:errcheck // we report the Shutdown error
		err = fmt.Errorf("serving: graceful shutdown on %s: %w", addr, err)
	}
	if serr := <-errc; !errors.Is(serr, http.ErrServerClosed) && err == nil {
		err = fmt.Errorf("serving: serve on %s: %w", addr, serr)
	}
	s.log.Info("serving: stopped", "addr", addr)
	return err
}
