package main

import (
	"errors"
	"log/slog"

	"github.com/tilestream/tilestream/state"
)

// openStore opens the configured online store.
func openStore(s *settings, log *slog.Logger) (*state.Store, error) {
	if s.StoreKind == "dynamodb" {
		return nil, errors.New("store kind dynamodb: this build does not have the DynamoDB store yet (issue 5)")
	}
	return state.Open(state.Config{Path: s.StorePath}, log)
}
