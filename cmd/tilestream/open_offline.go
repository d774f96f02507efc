package main

import (
	"context"
	"fmt"
	"time"

	"github.com/tilestream/tilestream/state"
)

// offlineOpenTimeout bounds opening an S3 offline log: loading the AWS
// config and one HeadBucket.
const offlineOpenTimeout = time.Minute

// openOfflineLog opens the configured offline log: a local directory, or
// the prefix of an S3 bucket with the SDK's standard credential chain
// (docs/config.md).
func openOfflineLog(s *settings) (*state.OfflineLog, error) {
	o := s.OfflineS3
	if o.Bucket == "" {
		return state.OpenOfflineLog(s.OfflineLogPath)
	}
	cfg := state.DefaultS3Config()
	cfg.Bucket, cfg.Prefix, cfg.Region, cfg.Endpoint, cfg.PathStyle = o.Bucket, o.Prefix, o.Region, o.Endpoint, o.PathStyle
	ctx, cancel := context.WithTimeout(context.Background(), offlineOpenTimeout)
	defer cancel()
	l, err := state.OpenS3OfflineLog(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("offline_log %s: %w", s.OfflineLogPath, err)
	}
	return l, nil
}
