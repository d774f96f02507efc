// Package metricsdoc checks docs/metrics.md against the Prometheus metrics
// a package registers, so that the list operators read stays complete.
package metricsdoc

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

// Desc is one registered metric: its name, help and variable labels.
type Desc struct {
	Name, Help string
	Labels     []string
}

// recorder is a Registerer that keeps the descriptions of what is
// registered with it, series or not.
type recorder struct{ descs []Desc }

var (
	fqName = regexp.MustCompile(`fqName: "([^"]+)"`)
	help   = regexp.MustCompile(`help: "((?:[^"\\]|\\.)*)"`)
	labels = regexp.MustCompile(`variableLabels: \{([^}]*)\}`)
)

func (r *recorder) Register(c prometheus.Collector) error {
	ch := make(chan *prometheus.Desc)
	go func() {
		c.Describe(ch)
		close(ch)
	}()
	for d := range ch {
		s := d.String()
		var desc Desc
		if m := fqName.FindStringSubmatch(s); m != nil {
			desc.Name = m[1]
		}
		if m := help.FindStringSubmatch(s); m != nil {
			desc.Help = strings.ReplaceAll(m[1], `\"`, `"`)
		}
		if m := labels.FindStringSubmatch(s); m != nil && m[1] != "" {
			desc.Labels = strings.Split(m[1], ",")
		}
		r.descs = append(r.descs, desc)
	}
	return nil
}

func (r *recorder) MustRegister(cs ...prometheus.Collector) {
	for _, c := range cs {
		_ = r.Register(c)
	}
}

func (r *recorder) Unregister(prometheus.Collector) bool { return true }

// Registered returns what register registers.
func Registered(register func(prometheus.Registerer)) []Desc {
	r := &recorder{}
	register(r)
	return r.descs
}

// Undocumented returns the names of the metrics register registers that
// docs/metrics.md (found from the working directory up to go.mod) does not
// list as a `name` in its tables.
func Undocumented(register func(prometheus.Registerer)) ([]string, error) {
	doc, err := readDoc()
	if err != nil {
		return nil, err
	}
	var missing []string
	for _, d := range Registered(register) {
		if !strings.Contains(doc, "| `"+d.Name+"` |") {
			missing = append(missing, d.Name)
		}
	}
	return missing, nil
}

func readDoc() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			b, err := os.ReadFile(filepath.Join(dir, "docs", "metrics.md"))
			return string(b), err
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("metricsdoc: no go.mod above the working directory")
		}
		dir = parent
	}
}

// Check fails t for every metric register registers that docs/metrics.md
// does not list, and when it registers none.
func Check(t testing.TB, register func(prometheus.Registerer)) {
	t.Helper()
	if len(Registered(register)) == 0 {
		t.Fatal("metricsdoc: nothing registered")
	}
	missing, err := Undocumented(register)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range missing {
		t.Errorf("metric %s is not listed in docs/metrics.md", name)
	}
}
