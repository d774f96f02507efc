package main

import (
	"errors"

	"github.com/tilestream/tilestream/state"
)

// openOfflineLog opens the configured offline log.
func openOfflineLog(s *settings) (*state.OfflineLog, error) {
	if s.OfflineS3.Bucket != "" {
		return nil, errors.New("offline_log: this build does not have the S3 offline log yet (issue 5)")
	}
	return state.OpenOfflineLog(s.OfflineLogPath)
}
