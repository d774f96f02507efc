package main

import (
	"fmt"
	"log/slog"
	"net"
	"strconv"

	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/tilestream/tilestream/tiling"
)

// startEmbedded starts the in-process Kafka broker (kfake) on the configured
// address with every view's topic (and the dead-letter topic) created with the
// configured partition count. Its log persists next to the store.
func startEmbedded(s *settings, views []*tiling.View, log *slog.Logger) (*kfake.Cluster, error) {
	host, portStr, err := net.SplitHostPort(s.Kafka.EmbeddedListen)
	if err != nil {
		return nil, fmt.Errorf("kafka.embedded.listen %q: %w", s.Kafka.EmbeddedListen, err)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil {
		return nil, fmt.Errorf("kafka.embedded.listen %q: bad port", s.Kafka.EmbeddedListen)
	}
	seen := map[string]bool{}
	var topics []string
	for _, v := range views {
		if !seen[v.Topic] {
			seen[v.Topic] = true
			topics = append(topics, v.Topic)
		}
	}
	if t := s.Kafka.DeadLetterTopic; t != "" && !seen[t] {
		topics = append(topics, t)
	}
	c, err := kfake.NewCluster(
		kfake.Ports(port),
		kfake.ListenFn(func(network, _ string) (net.Listener, error) {
			return net.Listen(network, net.JoinHostPort(host, strconv.Itoa(port)))
		}),
		kfake.SeedTopics(s.Kafka.EmbeddedPartitions, topics...),
		kfake.DataDir(embeddedDataDir(s)),
		kfake.AllowAutoTopicCreation(),
		kfake.DefaultNumPartitions(int(s.Kafka.EmbeddedPartitions)),
	)
	if err != nil {
		return nil, fmt.Errorf("start embedded broker on %s: %w", s.Kafka.EmbeddedListen, err)
	}
	return c, nil
}
