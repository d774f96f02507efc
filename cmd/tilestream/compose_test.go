package main

import (
	"bufio"
	"bytes"
	"cmp"
	"encoding/json"
	"fmt"
	"io/fs"
	"maps"
	"net"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/compose-spec/compose-go/v2/cli"
	"github.com/compose-spec/compose-go/v2/loader"
	"github.com/compose-spec/compose-go/v2/types"
	"github.com/distribution/reference"
	"github.com/sirupsen/logrus"
	"go.yaml.in/yaml/v3"
)

// compose.yaml, the Dockerfile, .dockerignore and deploy/ cannot be run where
// tilestream is developed (no Docker engine), so this test holds them to what
// `docker compose up --build` needs: compose-go (the library Docker Compose
// itself loads files with) parses the file without a warning, every image is
// pinned, the wiring between services agrees (ports, depends_on, volumes,
// credentials, the topic and the bucket), and the tilestream config the
// containers read passes `tilestream check` and points at those services.
// README.md's compose section describes the same services; keep it in step.

// composeServices are the services compose.yaml runs; README.md lists each.
var composeServices = []string{
	"kafka", "kafka-init", "dynamodb", "minio", "minio-init",
	"tilestream-1", "tilestream-2", "prometheus",
}

// tilestreamServices are the tilestream instances of compose.yaml.
var tilestreamServices = []string{"tilestream-1", "tilestream-2"}

func TestComposeProject(t *testing.T) {
	root := repoRoot(t)
	p, warnings := loadComposeProject(t, root)
	df := readDockerfile(t, filepath.Join(root, "Dockerfile"))

	t.Run("compose-go loads it without warnings", func(t *testing.T) {
		for _, w := range warnings {
			t.Errorf("compose-go warning: %s", w)
		}
	})

	t.Run("it runs the expected services", func(t *testing.T) {
		got := p.ServiceNames()
		want := slices.Clone(composeServices)
		slices.Sort(got)
		slices.Sort(want)
		if !slices.Equal(got, want) {
			t.Errorf("services = %v, want %v (update composeServices and README.md's compose section together)", got, want)
		}
	})

	t.Run("every pulled image is pinned to a tag or digest", func(t *testing.T) {
		for _, s := range services(p) {
			if s.Build != nil {
				continue // built here; checked below
			}
			if err := checkPinned(s.Image); err != nil {
				t.Errorf("service %s: image %q: %v", s.Name, s.Image, err)
			}
		}
		for _, img := range df.from {
			if strings.HasPrefix(img, "$") || slices.Contains(df.stages, img) {
				continue
			}
			if err := checkPinned(img); err != nil {
				t.Errorf("Dockerfile: FROM %q: %v", img, err)
			}
		}
	})

	t.Run("the tilestream instances build the Dockerfile", func(t *testing.T) {
		images := map[string]bool{}
		for _, name := range tilestreamServices {
			s := service(t, p, name)
			if s.Build == nil {
				t.Errorf("service %s: no build section; it should build the repository's Dockerfile", name)
				continue
			}
			if s.Build.Context != root {
				t.Errorf("service %s: build context %q, want the repository root %q", name, s.Build.Context, root)
			}
			dockerfile := s.Build.Dockerfile
			if dockerfile == "" {
				dockerfile = "Dockerfile"
			}
			if !filepath.IsAbs(dockerfile) {
				dockerfile = filepath.Join(s.Build.Context, dockerfile)
			}
			if dockerfile != filepath.Join(root, "Dockerfile") {
				t.Errorf("service %s: builds %s, want the repository's Dockerfile", name, dockerfile)
			}
			if s.Image == "" {
				t.Errorf("service %s: no image name; the instances should share one built image", name)
			}
			images[s.Image] = true
		}
		if len(images) > 1 {
			t.Errorf("the tilestream instances name different images %v; they run the same build", slices.Sorted(maps.Keys(images)))
		}
	})

	t.Run("no host port is published twice", func(t *testing.T) {
		seen := map[string]string{}
		for _, s := range services(p) {
			for _, port := range s.Ports {
				lo, hi, err := portRange(port.Published)
				if err != nil {
					t.Errorf("service %s: published port %q: %v", s.Name, port.Published, err)
					continue
				}
				proto := cmp.Or(port.Protocol, "tcp")
				for n := lo; n <= hi; n++ {
					key := fmt.Sprintf("%s:%d/%s", cmp.Or(port.HostIP, "0.0.0.0"), n, proto)
					if other, dup := seen[key]; dup {
						t.Errorf("host port %s is published by both %s and %s", key, other, s.Name)
					}
					seen[key] = s.Name
				}
			}
		}
	})

	t.Run("depends_on names services whose condition can be met", func(t *testing.T) {
		for _, s := range services(p) {
			for dep, d := range s.DependsOn {
				target, ok := p.Services[dep]
				if !ok {
					t.Errorf("service %s depends on %s, which is not a service", s.Name, dep)
					continue
				}
				switch d.Condition {
				case types.ServiceConditionHealthy:
					if target.HealthCheck == nil || target.HealthCheck.Disable || len(target.HealthCheck.Test) == 0 {
						t.Errorf("service %s waits for %s to be healthy, but %s has no healthcheck", s.Name, dep, dep)
					}
				case types.ServiceConditionCompletedSuccessfully:
					if r := target.Restart; r != "" && r != types.RestartPolicyNo {
						t.Errorf("service %s waits for %s to complete, but %s restarts (%s)", s.Name, dep, dep, r)
					}
				case types.ServiceConditionStarted:
				default:
					t.Errorf("service %s depends on %s with unknown condition %q", s.Name, dep, d.Condition)
				}
			}
		}
	})

	t.Run("volumes are declared and bind mounts exist", func(t *testing.T) {
		used := map[string]bool{}
		for _, s := range services(p) {
			for _, v := range s.Volumes {
				switch v.Type {
				case types.VolumeTypeVolume:
					used[v.Source] = true
					if _, ok := p.Volumes[v.Source]; !ok {
						t.Errorf("service %s mounts volume %q, which is not declared under volumes:", s.Name, v.Source)
					}
				case types.VolumeTypeBind:
					if !strings.HasPrefix(v.Source, root+string(filepath.Separator)) {
						t.Errorf("service %s bind-mounts %s, outside the repository", s.Name, v.Source)
					}
					if _, err := os.Stat(v.Source); err != nil {
						t.Errorf("service %s bind-mounts a missing file: %v", s.Name, err)
					}
				}
			}
		}
		for name := range p.Volumes {
			if !used[name] {
				t.Errorf("volume %s is declared but no service mounts it", name)
			}
		}
	})

	t.Run("the Dockerfile builds a static binary that runs as non-root", func(t *testing.T) {
		for _, want := range []string{"CGO_ENABLED=0", "-tags pebblegozstd", "-trimpath"} {
			if !strings.Contains(df.text, want) {
				t.Errorf("Dockerfile: the go build does not use %s", want)
			}
		}
		if df.user == "" {
			t.Error("Dockerfile: the final stage sets no USER")
		} else if uid, _, _ := strings.Cut(df.user, ":"); uid == "0" || uid == "root" {
			t.Errorf("Dockerfile: the final stage runs as %q", df.user)
		}
		goVersion := goDirective(t, filepath.Join(root, "go.mod"))
		majorMinor := strings.Join(strings.SplitN(goVersion, ".", 3)[:2], ".")
		if !slices.ContainsFunc(df.from, func(img string) bool {
			return img == "golang:"+majorMinor || strings.HasPrefix(img, "golang:"+majorMinor+".")
		}) {
			t.Errorf("Dockerfile: no golang:%s builder stage for go.mod's go %s (FROM %v)", majorMinor, goVersion, df.from)
		}
	})

	t.Run(".dockerignore keeps what the build needs", func(t *testing.T) {
		patterns := readDockerignore(t, filepath.Join(root, ".dockerignore"))
		need := append([]string{"go.mod", "go.sum"}, df.copied...)
		err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if d.IsDir() && (d.Name() == ".git" || d.Name() == "node_modules") {
				return filepath.SkipDir
			}
			if !d.IsDir() && strings.HasSuffix(p, ".go") && !strings.HasSuffix(p, "_test.go") {
				rel, _ := filepath.Rel(root, p)
				need = append(need, filepath.ToSlash(rel))
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		slices.Sort(need)
		for _, name := range slices.Compact(need) {
			if dockerignored(t, patterns, name) {
				t.Errorf(".dockerignore leaves %s out of the build context", name)
			}
		}
	})

	minio := service(t, p, "minio")
	minioUser, minioPassword := serviceEnv(minio, "MINIO_ROOT_USER"), serviceEnv(minio, "MINIO_ROOT_PASSWORD")
	kafkaInit := service(t, p, "kafka-init")
	minioInit := service(t, p, "minio-init")
	volumeOwner := map[string]string{}

	for _, name := range tilestreamServices {
		s := service(t, p, name)
		t.Run(name+" reads a config that passes tilestream check and names these services", func(t *testing.T) {
			args := slices.Clone(df.cmd)
			if len(s.Command) > 0 {
				args = s.Command
			}
			configPath := flagValue(args, "--config")
			if configPath == "" {
				t.Fatalf("the command %q names no --config", args)
			}
			source := bindSource(s, configPath)
			if source == "" {
				t.Fatalf("%s is not bind-mounted from the repository", configPath)
			}
			var out, errOut bytes.Buffer
			if err := runCheck([]string{"--config", source}, &out, &errOut); err != nil {
				t.Fatalf("tilestream check --config %s: %v\n%s", source, err, errOut.String())
			}
			cfg, err := loadConfig(source)
			if err != nil {
				t.Fatal(err)
			}

			for _, b := range cfg.Kafka.Brokers {
				host, port, _ := net.SplitHostPort(b)
				k, ok := p.Services[host]
				if !ok {
					t.Errorf("kafka.brokers: %s is not a compose service", b)
					continue
				}
				if adv := serviceEnv(k, "KAFKA_ADVERTISED_LISTENERS"); !strings.Contains(adv, "://"+host+":"+port) {
					t.Errorf("kafka.brokers: %s is not among %s's advertised listeners %q", b, host, adv)
				}
			}
			for _, v := range cfg.Views {
				if !slices.Contains(topicsCreated(kafkaInit), v.View.Topic) {
					t.Errorf("view %s reads topic %s, which kafka-init does not create (it creates %v)", v.View.Name, v.View.Topic, topicsCreated(kafkaInit))
				}
			}

			if cfg.StoreKind != "dynamodb" {
				t.Errorf("store.kind = %s, want dynamodb: the instances share the online store", cfg.StoreKind)
			} else {
				checkEndpoint(t, p, "store.dynamodb.endpoint", cfg.Dynamo.Endpoint, "dynamodb")
				if !cfg.Dynamo.CreateTable {
					t.Error("store.dynamodb.create_table is false; nothing else creates the table in compose")
				}
			}
			if cfg.OfflineS3.Bucket == "" {
				t.Errorf("offline_log.path = %s, want s3://: the instances share the offline log", cfg.OfflineLogPath)
			} else {
				checkEndpoint(t, p, "offline_log.s3.endpoint", cfg.OfflineS3.Endpoint, "minio")
				if !cfg.OfflineS3.PathStyle {
					t.Error("offline_log.s3.path_style is false; MinIO under a service name needs path-style addressing")
				}
				if !slices.Contains(bucketsCreated(minioInit), cfg.OfflineS3.Bucket) {
					t.Errorf("offline_log bucket %s is not created by minio-init (it creates %v)", cfg.OfflineS3.Bucket, bucketsCreated(minioInit))
				}
			}

			// It starts after everything it uses, and after the one-shot
			// services that made its topic and bucket.
			uses := []string{"kafka-init", "minio-init"}
			for _, b := range cfg.Kafka.Brokers {
				host, _, _ := net.SplitHostPort(b)
				uses = append(uses, host)
			}
			for _, e := range []string{cfg.Dynamo.Endpoint, cfg.OfflineS3.Endpoint} {
				if u, err := url.Parse(e); err == nil && u.Hostname() != "" {
					uses = append(uses, u.Hostname())
				}
			}
			after := dependencies(p, name)
			for _, u := range uses {
				if !after[u] {
					t.Errorf("does not wait for %s (depends_on, directly or through another service)", u)
				}
			}

			// The AWS SDK's credentials are MinIO's root user, and DynamoDB
			// Local takes only letters and digits as an access key id.
			key, secret := serviceEnv(s, "AWS_ACCESS_KEY_ID"), serviceEnv(s, "AWS_SECRET_ACCESS_KEY")
			if key != minioUser || secret != minioPassword {
				t.Errorf("AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY = %q/%q, want MinIO's root user %q/%q", key, secret, minioUser, minioPassword)
			}
			if !regexp.MustCompile(`^[A-Za-z0-9]+$`).MatchString(key) {
				t.Errorf("AWS_ACCESS_KEY_ID %q: DynamoDB Local accepts only A-Z, a-z and 0-9", key)
			}

			_, listenPort, _ := net.SplitHostPort(cfg.HTTP.Listen)
			if host, _, _ := net.SplitHostPort(cfg.HTTP.Listen); host != "0.0.0.0" && host != "" && host != "::" {
				t.Errorf("http.listen %s is not reachable from outside the container", cfg.HTTP.Listen)
			}
			if len(s.Ports) == 0 {
				t.Error("no port is published for the HTTP API")
			}
			for _, port := range s.Ports {
				if strconv.Itoa(int(port.Target)) != listenPort {
					t.Errorf("publishes container port %d, but tilestream listens on %s", port.Target, cfg.HTTP.Listen)
				}
			}
			if !slices.Contains(df.expose, listenPort) {
				t.Errorf("the Dockerfile exposes %v, not http.listen's port %s", df.expose, listenPort)
			}

			// The Pebble cache lives on a named volume of this instance alone.
			var cacheVolume string
			for _, v := range s.Volumes {
				if v.Type == types.VolumeTypeVolume && within(cfg.StorePath, v.Target) {
					cacheVolume = v.Source
				}
			}
			switch other, taken := volumeOwner[cacheVolume]; {
			case cacheVolume == "":
				t.Errorf("store.path %s is not on a named volume; the cache would not survive a container", cfg.StorePath)
			case taken:
				t.Errorf("store.path %s is on volume %s, which %s uses too; each instance needs its own cache", cfg.StorePath, cacheVolume, other)
			default:
				volumeOwner[cacheVolume] = name
			}
		})
	}

	t.Run("minio-init signs in as MinIO's root user", func(t *testing.T) {
		found := false
		for k, v := range minioInit.Environment {
			if !strings.HasPrefix(k, "MC_HOST_") || v == nil {
				continue
			}
			found = true
			u, err := url.Parse(*v)
			if err != nil {
				t.Fatalf("%s: %v", k, err)
			}
			pw, _ := u.User.Password()
			if u.User.Username() != minioUser || pw != minioPassword {
				t.Errorf("%s signs in as %q/%q, want MinIO's root user %q/%q", k, u.User.Username(), pw, minioUser, minioPassword)
			}
			if u.Hostname() != "minio" {
				t.Errorf("%s points at %s, not the minio service", k, u.Host)
			}
		}
		if !found {
			t.Error("minio-init has no MC_HOST_<alias> environment variable")
		}
	})

	t.Run("Prometheus scrapes every tilestream instance", func(t *testing.T) {
		prom := service(t, p, "prometheus")
		source := bindSource(prom, "/etc/prometheus/prometheus.yml")
		if source == "" {
			t.Fatal("prometheus: /etc/prometheus/prometheus.yml is not bind-mounted from the repository")
		}
		data, err := os.ReadFile(source)
		if err != nil {
			t.Fatal(err)
		}
		var pc struct {
			ScrapeConfigs []struct {
				JobName       string `yaml:"job_name"`
				MetricsPath   string `yaml:"metrics_path"`
				Scheme        string `yaml:"scheme"`
				StaticConfigs []struct {
					Targets []string `yaml:"targets"`
				} `yaml:"static_configs"`
			} `yaml:"scrape_configs"`
		}
		if err := yaml.Unmarshal(data, &pc); err != nil {
			t.Fatalf("%s: %v", source, err)
		}
		scraped := map[string]bool{}
		for _, sc := range pc.ScrapeConfigs {
			if mp := cmp.Or(sc.MetricsPath, "/metrics"); mp != "/metrics" || cmp.Or(sc.Scheme, "http") != "http" {
				continue
			}
			for _, st := range sc.StaticConfigs {
				for _, target := range st.Targets {
					scraped[target] = true
				}
			}
		}
		for _, name := range tilestreamServices {
			cfg, err := loadConfig(bindSource(service(t, p, name), flagValue(df.cmd, "--config")))
			if err != nil {
				t.Fatal(err)
			}
			_, port, _ := net.SplitHostPort(cfg.HTTP.Listen)
			if target := name + ":" + port; !scraped[target] {
				t.Errorf("%s does not scrape %s/metrics (it scrapes %v)", source, target, slices.Sorted(maps.Keys(scraped)))
			}
		}
	})
}

// loadComposeProject loads compose.yaml as `docker compose` would, with no
// environment from the test process, no .env file and no remote resource
// loaders (so nothing is fetched), and returns the warnings compose-go logged.
func loadComposeProject(t *testing.T, root string) (*types.Project, []string) {
	t.Helper()
	hook := &warningHook{}
	std := logrus.StandardLogger()
	old := std.ReplaceHooks(logrus.LevelHooks{})
	std.AddHook(hook)
	t.Cleanup(func() { std.ReplaceHooks(old) })

	opts, err := cli.NewProjectOptions([]string{filepath.Join(root, "compose.yaml")},
		cli.WithWorkingDirectory(root),
		cli.WithInterpolation(true),
		cli.WithNormalization(true),
		cli.WithConsistency(true),
		cli.WithResolvedPaths(true),
		cli.WithLoadOptions(func(o *loader.Options) { o.ResourceLoaders = nil }),
	)
	if err != nil {
		t.Fatal(err)
	}
	p, err := opts.LoadProject(t.Context())
	if err != nil {
		t.Fatalf("load compose.yaml: %v", err)
	}
	return p, hook.messages()
}

// warningHook collects what compose-go logs at warning level and above.
type warningHook struct {
	mu   sync.Mutex
	msgs []string
}

func (h *warningHook) Levels() []logrus.Level {
	return []logrus.Level{logrus.PanicLevel, logrus.FatalLevel, logrus.ErrorLevel, logrus.WarnLevel}
}

func (h *warningHook) Fire(e *logrus.Entry) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.msgs = append(h.msgs, e.Message)
	return nil
}

func (h *warningHook) messages() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.msgs)
}

func repoRoot(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "go.mod")); err != nil {
		t.Fatalf("repository root: %v", err)
	}
	return root
}

// services returns the project's services sorted by name, so that failures
// are reported in a stable order.
func services(p *types.Project) []types.ServiceConfig {
	var out []types.ServiceConfig
	for _, name := range slices.Sorted(maps.Keys(p.Services)) {
		out = append(out, p.Services[name])
	}
	return out
}

func service(t *testing.T, p *types.Project, name string) types.ServiceConfig {
	t.Helper()
	s, ok := p.Services[name]
	if !ok {
		t.Fatalf("compose.yaml has no service %s", name)
	}
	return s
}

func serviceEnv(s types.ServiceConfig, key string) string {
	if v := s.Environment[key]; v != nil {
		return *v
	}
	return ""
}

// dependencies returns the services name waits for, directly or through
// the services it waits for.
func dependencies(p *types.Project, name string) map[string]bool {
	seen := map[string]bool{}
	var visit func(string)
	visit = func(n string) {
		for dep := range p.Services[n].DependsOn {
			if !seen[dep] {
				seen[dep] = true
				visit(dep)
			}
		}
	}
	visit(name)
	return seen
}

// checkPinned accepts an image reference with a digest, or with a tag other
// than latest.
func checkPinned(image string) error {
	ref, err := reference.ParseNormalizedNamed(image)
	if err != nil {
		return err
	}
	if _, ok := ref.(reference.Digested); ok {
		return nil
	}
	tagged, ok := ref.(reference.Tagged)
	switch {
	case !ok:
		return fmt.Errorf("no tag: it would pull latest")
	case tagged.Tag() == "latest":
		return fmt.Errorf("tag latest is not a pin")
	}
	return nil
}

// checkEndpoint requires endpoint to be an http URL whose host is the compose
// service want, on a port that service declares.
func checkEndpoint(t *testing.T, p *types.Project, field, endpoint, want string) {
	t.Helper()
	u, err := url.Parse(endpoint)
	if err != nil || u.Host == "" {
		t.Errorf("%s %q: not a URL", field, endpoint)
		return
	}
	if u.Hostname() != want {
		t.Errorf("%s %s: host %s, want the %s service", field, endpoint, u.Hostname(), want)
		return
	}
	s := p.Services[want]
	var declared []string
	for _, port := range s.Ports {
		declared = append(declared, strconv.Itoa(int(port.Target)))
	}
	declared = append(declared, s.Expose...)
	if !slices.Contains(declared, u.Port()) {
		t.Errorf("%s %s: port %s is not among %s's ports %v", field, endpoint, u.Port(), want, declared)
	}
}

// topicsCreated returns the --topic arguments of a one-shot service's
// command line.
func topicsCreated(s types.ServiceConfig) []string {
	args := slices.Concat(s.Entrypoint, s.Command)
	var topics []string
	for i, a := range args {
		if a == "--topic" && i+1 < len(args) {
			topics = append(topics, args[i+1])
		}
	}
	return topics
}

// bucketsCreated returns the buckets of an `mc mb alias/bucket` command line.
func bucketsCreated(s types.ServiceConfig) []string {
	args := slices.Concat(s.Entrypoint, s.Command)
	i := slices.Index(args, "mb")
	if i < 0 {
		return nil
	}
	var buckets []string
	for _, a := range args[i+1:] {
		if strings.HasPrefix(a, "-") {
			continue
		}
		if _, bucket, ok := strings.Cut(a, "/"); ok {
			buckets = append(buckets, strings.Trim(bucket, "/"))
		}
	}
	return buckets
}

// bindSource returns the host file bind-mounted at target, or "".
func bindSource(s types.ServiceConfig, target string) string {
	for _, v := range s.Volumes {
		if v.Type == types.VolumeTypeBind && v.Target == target {
			return v.Source
		}
	}
	return ""
}

func flagValue(args []string, name string) string {
	for i, a := range args {
		if a == name && i+1 < len(args) {
			return args[i+1]
		}
		if v, ok := strings.CutPrefix(a, name+"="); ok {
			return v
		}
	}
	return ""
}

// within reports whether p is dir or below it.
func within(p, dir string) bool {
	rel, err := filepath.Rel(dir, p)
	return err == nil && rel != ".." && !strings.HasPrefix(rel, "../")
}

func portRange(s string) (lo, hi int, err error) {
	a, b, isRange := strings.Cut(s, "-")
	if lo, err = strconv.Atoi(a); err != nil {
		return 0, 0, err
	}
	hi = lo
	if isRange {
		if hi, err = strconv.Atoi(b); err != nil {
			return 0, 0, err
		}
	}
	if lo < 1 || hi > 65535 || lo > hi {
		return 0, 0, fmt.Errorf("not a port or port range")
	}
	return lo, hi, nil
}

// dockerfile is what the test needs of the Dockerfile.
type dockerfile struct {
	text   string
	from   []string // images of FROM lines
	stages []string // AS names
	user   string   // USER of the final stage
	expose []string // EXPOSE ports of the final stage
	cmd    []string // CMD of the final stage (exec form)
	copied []string // COPY sources from the build context
}

func readDockerfile(t *testing.T, name string) dockerfile {
	t.Helper()
	data, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	df := dockerfile{text: string(data)}
	// Join continuation lines, drop comments.
	var lines []string
	var cur strings.Builder
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if strings.HasPrefix(line, "#") || line == "" {
			continue
		}
		if l, ok := strings.CutSuffix(line, `\`); ok {
			cur.WriteString(l + " ")
			continue
		}
		cur.WriteString(line)
		lines = append(lines, cur.String())
		cur.Reset()
	}
	for _, line := range lines {
		instr, rest, _ := strings.Cut(line, " ")
		fields := strings.Fields(rest)
		switch strings.ToUpper(instr) {
		case "FROM":
			// New stage: reset what the final stage sets.
			df.user, df.expose, df.cmd = "", nil, nil
			fields = slices.DeleteFunc(fields, func(f string) bool { return strings.HasPrefix(f, "--") })
			if len(fields) == 0 {
				t.Fatalf("Dockerfile: %q", line)
			}
			df.from = append(df.from, fields[0])
			if len(fields) == 3 && strings.EqualFold(fields[1], "AS") {
				df.stages = append(df.stages, fields[2])
			}
		case "USER":
			df.user = rest
		case "EXPOSE":
			for _, f := range fields {
				port, _, _ := strings.Cut(f, "/")
				df.expose = append(df.expose, port)
			}
		case "CMD":
			if err := json.Unmarshal([]byte(rest), &df.cmd); err != nil {
				t.Fatalf("Dockerfile: CMD is not in exec form: %v", err)
			}
		case "COPY":
			if slices.ContainsFunc(fields, func(f string) bool { return strings.HasPrefix(f, "--from=") }) {
				continue
			}
			fields = slices.DeleteFunc(fields, func(f string) bool { return strings.HasPrefix(f, "--") })
			for _, src := range fields[:len(fields)-1] {
				if src != "." && !strings.ContainsAny(src, "*?[") {
					df.copied = append(df.copied, path.Clean(src))
				}
			}
		}
	}
	if len(df.cmd) == 0 {
		t.Fatal("Dockerfile: the final stage has no CMD")
	}
	return df
}

func goDirective(t *testing.T, name string) string {
	t.Helper()
	data, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^go (\d+\.\d+(?:\.\d+)?)\s*$`).FindSubmatch(data)
	if m == nil {
		t.Fatalf("%s: no go directive", name)
	}
	return string(m[1])
}

func readDockerignore(t *testing.T, name string) []string {
	t.Helper()
	data, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	var patterns []string
	for _, line := range strings.Split(string(data), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		patterns = append(patterns, line)
	}
	return patterns
}

// dockerignored applies .dockerignore patterns to a slash-separated path in
// the build context: the last matching pattern decides, "!" re-includes, a
// pattern matching a directory excludes everything in it. It understands the
// subset of the syntax that .dockerignore uses (path.Match patterns, an
// optional leading "/" or "**/") and fails the test on anything else, so
// that a new kind of pattern is not silently misread.
func dockerignored(t *testing.T, patterns []string, name string) bool {
	t.Helper()
	parts := strings.Split(name, "/")
	ignored := false
	for _, pat := range patterns {
		neg := strings.HasPrefix(pat, "!")
		pat = strings.TrimPrefix(path.Clean(strings.TrimPrefix(pat, "!")), "/")
		anywhere := strings.HasPrefix(pat, "**/")
		pat = strings.TrimPrefix(pat, "**/")
		if strings.Contains(pat, "**") {
			t.Fatalf(".dockerignore: pattern %q: this test does not understand ** there", pat)
		}
		matched := false
		for i := 1; i <= len(parts) && !matched; i++ {
			// The pattern matches parts[:i] (a directory excludes what is
			// in it) or, after "**/", any trailing run of parts[:i].
			first := 0
			if anywhere {
				first = i - 1
			}
			for k := 0; k <= first && !matched; k++ {
				m, err := path.Match(pat, strings.Join(parts[k:i], "/"))
				if err != nil {
					t.Fatalf(".dockerignore: pattern %q: %v", pat, err)
				}
				matched = m
			}
		}
		if matched {
			ignored = !neg
		}
	}
	return ignored
}
