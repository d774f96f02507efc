package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tilestream/tilestream/state"
	"github.com/tilestream/tilestream/state/dynamo"
)

// openStore opens the configured online store; reg receives the DynamoDB
// store's metrics. Opening DynamoDB gives up after 2 minutes, or when ctx
// ends.
func openStore(ctx context.Context, s *settings, reg prometheus.Registerer, log *slog.Logger) (*state.Store, error) {
	if s.StoreKind != "dynamodb" {
		return state.Open(state.Config{Path: s.StorePath}, log)
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	st, err := state.OpenDynamo(ctx, dynamoConfig(s, reg), log.With("component", "store"))
	if err != nil {
		return nil, fmt.Errorf("open DynamoDB table %s: %w", s.Dynamo.Table, err)
	}
	log.Info("online store", "store", s.describeStore(), "cache_staleness", s.Cache.Staleness)
	return st, nil
}

func dynamoConfig(s *settings, reg prometheus.Registerer) state.DynamoConfig {
	tc := dynamo.DefaultConfig()
	tc.Table, tc.Region, tc.Endpoint = s.Dynamo.Table, s.Dynamo.Region, s.Dynamo.Endpoint
	return state.DynamoConfig{
		Table:         tc,
		CreateTable:   s.Dynamo.CreateTable,
		TTL:           s.Dynamo.TTL,
		CollectRate:   s.Dynamo.CollectRate,
		CachePath:     s.StorePath,
		CacheMaxBytes: s.Cache.MaxBytes,
		Staleness:     s.Cache.Staleness,
		Registerer:    reg,
	}
}

// runInitStore creates the DynamoDB table of a config (docs/format.md has
// its schema), so that instances can run with create_table: false.
func runInitStore(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("init-store", stderr)
	path := fs.String("config", "", "config file (YAML) with store.kind: dynamodb")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *path == "" {
		return errors.New("init-store: --config is required")
	}
	s, err := loadConfig(*path)
	if err != nil {
		return err
	}
	if s.StoreKind != "dynamodb" {
		return fmt.Errorf("init-store: store.kind is %q; only a dynamodb store has a table to create", s.StoreKind)
	}
	tc := dynamoConfig(s, nil).Table
	created, err := state.InitDynamo(ctx, tc)
	switch {
	case errors.Is(err, dynamo.ErrNoTTL):
		fmt.Fprintf(stdout, "created table %s; time to live could not be enabled (%v): the ttl backstop is off\n", tc.Table, err)
		return nil
	case err != nil:
		return fmt.Errorf("init-store: %w", err)
	case created:
		fmt.Fprintf(stdout, "created table %s (pk, sk: binary; on-demand capacity; time to live on attribute %s)\n", tc.Table, dynamo.TTLAttribute)
	default:
		fmt.Fprintf(stdout, "table %s exists with tilestream's key schema\n", tc.Table)
	}
	return nil
}
