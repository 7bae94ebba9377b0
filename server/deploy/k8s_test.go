// Package deploy_test checks the deployment recipes in server/deploy
// against the node they deploy: the Kubernetes manifests (k8s/) and the
// Grafana dashboard (grafana/).
//
// The manifests are checked offline, without kubectl or a cluster:
// kubeconform and kubeval need JSON schemas they download, and decoding
// into k8s.io/api's types would pull client-go's dependency tree into the
// module (and upgrade modules the node uses). Instead every document is
// decoded strictly (unknown fields are errors) into the subset of the
// Kubernetes types the manifests use, and the fields that matter are
// checked against the node itself: every PLAIT_* variable is a flag of the
// node and the whole environment is a configuration the node accepts, the
// probe paths answer on a real node, ports and names line up between the
// Deployment, Service and ServiceMonitor, selectors select, key files
// come from a Secret, and the grace period covers preStop plus the drain.
package deploy_test

import (
	"bufio"
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/plaithub/plait/server/node"
)

// The subset of the Kubernetes API the manifests use, with the API's
// field names: decoding with KnownFields rejects any other field (a typo
// such as readinesProbe, or a field at the wrong level).

type meta struct {
	Name   string            `yaml:"name"`
	Labels map[string]string `yaml:"labels"`
}

type header struct {
	APIVersion string `yaml:"apiVersion"`
	Kind       string `yaml:"kind"`
}

type configMap struct {
	header   `yaml:",inline"`
	Metadata meta              `yaml:"metadata"`
	Data     map[string]string `yaml:"data"`
}

type selector struct {
	MatchLabels map[string]string `yaml:"matchLabels"`
}

type deployment struct {
	header   `yaml:",inline"`
	Metadata meta `yaml:"metadata"`
	Spec     struct {
		Replicas             int      `yaml:"replicas"`
		RevisionHistoryLimit int      `yaml:"revisionHistoryLimit"`
		Selector             selector `yaml:"selector"`
		Strategy             struct {
			Type          string `yaml:"type"`
			RollingUpdate struct {
				MaxUnavailable int `yaml:"maxUnavailable"`
				MaxSurge       int `yaml:"maxSurge"`
			} `yaml:"rollingUpdate"`
		} `yaml:"strategy"`
		Template struct {
			Metadata meta    `yaml:"metadata"`
			Spec     podSpec `yaml:"spec"`
		} `yaml:"template"`
	} `yaml:"spec"`
}

type podSpec struct {
	TerminationGracePeriodSeconds int  `yaml:"terminationGracePeriodSeconds"`
	AutomountServiceAccountToken  bool `yaml:"automountServiceAccountToken"`
	SecurityContext               struct {
		RunAsNonRoot   bool `yaml:"runAsNonRoot"`
		RunAsUser      int  `yaml:"runAsUser"`
		RunAsGroup     int  `yaml:"runAsGroup"`
		FSGroup        int  `yaml:"fsGroup"`
		SeccompProfile struct {
			Type string `yaml:"type"`
		} `yaml:"seccompProfile"`
	} `yaml:"securityContext"`
	TopologySpreadConstraints []struct {
		MaxSkew           int      `yaml:"maxSkew"`
		TopologyKey       string   `yaml:"topologyKey"`
		WhenUnsatisfiable string   `yaml:"whenUnsatisfiable"`
		LabelSelector     selector `yaml:"labelSelector"`
	} `yaml:"topologySpreadConstraints"`
	Containers []container `yaml:"containers"`
	Volumes    []struct {
		Name   string `yaml:"name"`
		Secret *struct {
			SecretName  string `yaml:"secretName"`
			DefaultMode int    `yaml:"defaultMode"`
		} `yaml:"secret"`
		EmptyDir *struct {
			SizeLimit string `yaml:"sizeLimit"`
		} `yaml:"emptyDir"`
	} `yaml:"volumes"`
}

type probe struct {
	HTTPGet struct {
		Path string `yaml:"path"`
		Port string `yaml:"port"`
	} `yaml:"httpGet"`
	InitialDelaySeconds int `yaml:"initialDelaySeconds"`
	PeriodSeconds       int `yaml:"periodSeconds"`
	TimeoutSeconds      int `yaml:"timeoutSeconds"`
	FailureThreshold    int `yaml:"failureThreshold"`
}

type container struct {
	Name            string `yaml:"name"`
	Image           string `yaml:"image"`
	ImagePullPolicy string `yaml:"imagePullPolicy"`
	Args            []string
	Ports           []struct {
		Name          string `yaml:"name"`
		ContainerPort int    `yaml:"containerPort"`
		Protocol      string `yaml:"protocol"`
	} `yaml:"ports"`
	EnvFrom []struct {
		ConfigMapRef *struct {
			Name string `yaml:"name"`
		} `yaml:"configMapRef"`
	} `yaml:"envFrom"`
	Env []struct {
		Name      string `yaml:"name"`
		Value     string `yaml:"value"`
		ValueFrom *struct {
			SecretKeyRef *struct {
				Name string `yaml:"name"`
				Key  string `yaml:"key"`
			} `yaml:"secretKeyRef"`
		} `yaml:"valueFrom"`
	} `yaml:"env"`
	StartupProbe   *probe `yaml:"startupProbe"`
	ReadinessProbe *probe `yaml:"readinessProbe"`
	LivenessProbe  *probe `yaml:"livenessProbe"`
	Lifecycle      struct {
		PreStop struct {
			Exec struct {
				Command []string `yaml:"command"`
			} `yaml:"exec"`
		} `yaml:"preStop"`
	} `yaml:"lifecycle"`
	Resources struct {
		Requests map[string]string `yaml:"requests"`
		Limits   map[string]string `yaml:"limits"`
	} `yaml:"resources"`
	SecurityContext struct {
		AllowPrivilegeEscalation *bool `yaml:"allowPrivilegeEscalation"`
		ReadOnlyRootFilesystem   bool  `yaml:"readOnlyRootFilesystem"`
		Capabilities             struct {
			Drop []string `yaml:"drop"`
		} `yaml:"capabilities"`
	} `yaml:"securityContext"`
	VolumeMounts []struct {
		Name      string `yaml:"name"`
		MountPath string `yaml:"mountPath"`
		ReadOnly  bool   `yaml:"readOnly"`
	} `yaml:"volumeMounts"`
}

type service struct {
	header   `yaml:",inline"`
	Metadata meta `yaml:"metadata"`
	Spec     struct {
		Type     string            `yaml:"type"`
		Selector map[string]string `yaml:"selector"`
		Ports    []struct {
			Name       string `yaml:"name"`
			Port       int    `yaml:"port"`
			TargetPort string `yaml:"targetPort"`
			Protocol   string `yaml:"protocol"`
		} `yaml:"ports"`
	} `yaml:"spec"`
}

type pdb struct {
	header   `yaml:",inline"`
	Metadata meta `yaml:"metadata"`
	Spec     struct {
		MaxUnavailable int      `yaml:"maxUnavailable"`
		Selector       selector `yaml:"selector"`
	} `yaml:"spec"`
}

type serviceMonitor struct {
	header   `yaml:",inline"`
	Metadata meta `yaml:"metadata"`
	Spec     struct {
		Selector  selector `yaml:"selector"`
		Endpoints []struct {
			Port          string `yaml:"port"`
			Path          string `yaml:"path"`
			Interval      string `yaml:"interval"`
			ScrapeTimeout string `yaml:"scrapeTimeout"`
		} `yaml:"endpoints"`
	} `yaml:"spec"`
}

type kustomization struct {
	header `yaml:",inline"`
	Labels []struct {
		Pairs map[string]string `yaml:"pairs"`
	} `yaml:"labels"`
	Resources []string `yaml:"resources"`
	Images    []struct {
		Name    string `yaml:"name"`
		NewName string `yaml:"newName"`
		NewTag  string `yaml:"newTag"`
	} `yaml:"images"`
}

// decodeStrict decodes one YAML document into v, refusing unknown fields.
func decodeStrict(doc []byte, v any) error {
	dec := yaml.NewDecoder(bytes.NewReader(doc))
	dec.KnownFields(true)
	return dec.Decode(v)
}

// manifests are the parsed documents of k8s/, by kind (one each).
type manifests struct {
	kust    kustomization
	cm      configMap
	dep     deployment
	svc     service
	pdb     pdb
	monitor serviceMonitor
}

func loadManifests(t *testing.T) manifests {
	t.Helper()
	var m manifests
	raw, err := os.ReadFile("k8s/kustomization.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if err := decodeStrict(raw, &m.kust); err != nil {
		t.Fatalf("kustomization.yaml: %v", err)
	}
	if m.kust.APIVersion != "kustomize.config.k8s.io/v1beta1" || m.kust.Kind != "Kustomization" {
		t.Fatalf("kustomization.yaml: %s %s", m.kust.APIVersion, m.kust.Kind)
	}
	// Every manifest in the directory is a resource, and every resource exists.
	files, _ := filepath.Glob("k8s/*.yaml")
	var want []string
	for _, f := range files {
		if filepath.Base(f) != "kustomization.yaml" {
			want = append(want, filepath.Base(f))
		}
	}
	if got := slices.Sorted(slices.Values(m.kust.Resources)); !slices.Equal(got, want) {
		t.Fatalf("kustomization resources %q, files %q", got, want)
	}
	targets := map[string]any{
		"v1/ConfigMap":                            &m.cm,
		"apps/v1/Deployment":                      &m.dep,
		"v1/Service":                              &m.svc,
		"policy/v1/PodDisruptionBudget":           &m.pdb,
		"monitoring.coreos.com/v1/ServiceMonitor": &m.monitor,
	}
	seen := map[string]bool{}
	for _, name := range m.kust.Resources {
		raw, err := os.ReadFile(filepath.Join("k8s", name))
		if err != nil {
			t.Fatal(err)
		}
		dec := yaml.NewDecoder(bytes.NewReader(raw))
		for i := 0; ; i++ {
			var node yaml.Node
			if err := dec.Decode(&node); errors.Is(err, io.EOF) {
				break
			} else if err != nil {
				t.Fatalf("%s document %d: %v", name, i, err)
			}
			doc, err := yaml.Marshal(&node)
			if err != nil {
				t.Fatal(err)
			}
			var h struct {
				header `yaml:",inline"`
			}
			if err := yaml.Unmarshal(doc, &h); err != nil {
				t.Fatal(err)
			}
			key := h.APIVersion + "/" + h.Kind
			target, ok := targets[key]
			if !ok {
				t.Fatalf("%s document %d: unexpected %s", name, i, key)
			}
			if seen[key] {
				t.Fatalf("%s: a second %s", name, key)
			}
			seen[key] = true
			if err := decodeStrict(doc, target); err != nil {
				t.Fatalf("%s document %d (%s): %v", name, i, key, err)
			}
		}
	}
	if len(seen) != len(targets) {
		t.Fatalf("manifests hold %v, want one of each of %d kinds", seen, len(targets))
	}
	return m
}

// nodeFlags lists the node's flags from its usage text.
func nodeFlags(t *testing.T) map[string]bool {
	t.Helper()
	var usage strings.Builder
	if _, err := node.ParseConfig([]string{"-h"}, func(string) string { return "" }, &usage); !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("ParseConfig -h: %v", err)
	}
	flags := map[string]bool{}
	re := regexp.MustCompile(`^  -([a-z0-9-]+)`)
	sc := bufio.NewScanner(strings.NewReader(usage.String()))
	for sc.Scan() {
		if m := re.FindStringSubmatch(sc.Text()); m != nil {
			flags[m[1]] = true
		}
	}
	if len(flags) < 30 {
		t.Fatalf("only %d flags in the usage text", len(flags))
	}
	return flags
}

func flagOf(env string) string {
	return strings.ReplaceAll(strings.ToLower(strings.TrimPrefix(env, "PLAIT_")), "_", "-")
}

func subset(sub, of map[string]string) bool {
	if len(sub) == 0 {
		return false
	}
	for k, v := range sub {
		if of[k] != v {
			return false
		}
	}
	return true
}

func TestKubernetesManifests(t *testing.T) {
	m := loadManifests(t)
	dep, pod := m.dep, m.dep.Spec.Template.Spec
	if len(pod.Containers) != 1 {
		t.Fatalf("%d containers", len(pod.Containers))
	}
	c := pod.Containers[0]
	podLabels := m.dep.Spec.Template.Metadata.Labels

	// The environment: every variable is a node flag, and the whole of it
	// (secrets stood in for) is a configuration the node accepts.
	flags := nodeFlags(t)
	env := map[string]string{}
	for _, ef := range c.EnvFrom {
		if ef.ConfigMapRef == nil || ef.ConfigMapRef.Name != m.cm.Metadata.Name {
			t.Errorf("envFrom %+v is not the ConfigMap %q", ef, m.cm.Metadata.Name)
		}
	}
	for k, v := range m.cm.Data {
		env[k] = v
	}
	secretEnv := map[string]string{}
	for _, e := range c.Env {
		switch {
		case e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil:
			secretEnv[e.Name] = e.ValueFrom.SecretKeyRef.Name + "/" + e.ValueFrom.SecretKeyRef.Key
			env[e.Name] = "secret"
		case e.ValueFrom == nil:
			env[e.Name] = e.Value
		default:
			t.Errorf("env %s: valueFrom other than a secretKeyRef", e.Name)
		}
	}
	for name := range env {
		if !strings.HasPrefix(name, "PLAIT_") || !flags[flagOf(name)] {
			t.Errorf("%s is not a node setting (no flag --%s)", name, flagOf(name))
		}
	}
	for _, need := range []string{"PLAIT_REDIS_URL", "PLAIT_AUTH_KEY_FILE", "PLAIT_ENCRYPTION_KEY_FILE", "PLAIT_ADDR", "PLAIT_PUBLIC_URL"} {
		if env[need] == "" {
			t.Errorf("%s is not set", need)
		}
	}
	if secretEnv["PLAIT_REDIS_URL"] == "" {
		t.Error("PLAIT_REDIS_URL (it holds the Redis password) must come from a Secret")
	}
	for name := range env {
		if strings.HasSuffix(name, "_SECRET") && secretEnv[name] == "" {
			t.Errorf("%s must come from a Secret", name)
		}
	}
	env["PLAIT_REDIS_URL"] = "redis://:password@redis:6379/0"
	env["PLAIT_OIDC_CLIENT_SECRET"] = "s3cret"
	cfg, err := node.ParseConfig(nil, func(k string) string { return env[k] }, io.Discard)
	if err != nil {
		t.Fatalf("the manifests' environment is not a valid node configuration: %v", err)
	}
	if !cfg.AuthEnabled() || cfg.AllowAnonymous {
		t.Error("the deployment must require logins")
	}

	// Ports: the node listens on the container port the probes, the
	// Service and the ServiceMonitor name.
	if len(c.Ports) != 1 || c.Ports[0].Name != "http" || c.Ports[0].Protocol != "TCP" {
		t.Fatalf("ports %+v", c.Ports)
	}
	if !strings.HasSuffix(cfg.Addr, fmt.Sprintf(":%d", c.Ports[0].ContainerPort)) || !strings.HasPrefix(cfg.Addr, "0.0.0.0:") {
		t.Errorf("PLAIT_ADDR %s does not listen on all addresses at containerPort %d", cfg.Addr, c.Ports[0].ContainerPort)
	}
	for name, p := range map[string]*probe{"startupProbe": c.StartupProbe, "readinessProbe": c.ReadinessProbe, "livenessProbe": c.LivenessProbe} {
		if p == nil {
			t.Errorf("no %s", name)
			continue
		}
		if p.HTTPGet.Port != c.Ports[0].Name || p.PeriodSeconds <= 0 || p.TimeoutSeconds <= 0 || p.FailureThreshold <= 0 {
			t.Errorf("%s: %+v", name, *p)
		}
	}
	if c.ReadinessProbe != nil && c.ReadinessProbe.HTTPGet.Path != "/readyz" {
		t.Errorf("readiness on %q, want /readyz (503 while draining)", c.ReadinessProbe.HTTPGet.Path)
	}
	if c.LivenessProbe != nil && c.LivenessProbe.HTTPGet.Path != "/healthz" {
		t.Errorf("liveness on %q, want /healthz", c.LivenessProbe.HTTPGet.Path)
	}
	if len(m.svc.Spec.Ports) != 1 || m.svc.Spec.Ports[0].TargetPort != c.Ports[0].Name {
		t.Errorf("Service ports %+v do not target %q", m.svc.Spec.Ports, c.Ports[0].Name)
	}
	if len(m.monitor.Spec.Endpoints) != 1 || m.monitor.Spec.Endpoints[0].Port != m.svc.Spec.Ports[0].Name || m.monitor.Spec.Endpoints[0].Path != "/metrics" {
		t.Errorf("ServiceMonitor endpoints %+v", m.monitor.Spec.Endpoints)
	}

	// Selectors select what they mean to.
	if !subset(dep.Spec.Selector.MatchLabels, podLabels) {
		t.Errorf("Deployment selector %v does not match its pods %v", dep.Spec.Selector.MatchLabels, podLabels)
	}
	if !subset(m.svc.Spec.Selector, podLabels) || !subset(m.pdb.Spec.Selector.MatchLabels, podLabels) {
		t.Errorf("Service %v or PodDisruptionBudget %v does not select the pods %v", m.svc.Spec.Selector, m.pdb.Spec.Selector.MatchLabels, podLabels)
	}
	if !subset(m.monitor.Spec.Selector.MatchLabels, m.svc.Metadata.Labels) {
		t.Errorf("ServiceMonitor selector %v does not match the Service %v", m.monitor.Spec.Selector.MatchLabels, m.svc.Metadata.Labels)
	}
	for _, tsc := range pod.TopologySpreadConstraints {
		if !subset(tsc.LabelSelector.MatchLabels, podLabels) {
			t.Errorf("topology spread selector %v does not match the pods", tsc.LabelSelector.MatchLabels)
		}
	}

	// Availability: rolling updates and disruptions keep the others up.
	if dep.Spec.Replicas < 2 || dep.Spec.Strategy.RollingUpdate.MaxUnavailable != 0 || dep.Spec.Strategy.RollingUpdate.MaxSurge < 1 {
		t.Errorf("replicas %d, strategy %+v", dep.Spec.Replicas, dep.Spec.Strategy)
	}
	if m.pdb.Spec.MaxUnavailable < 1 || m.pdb.Spec.MaxUnavailable >= dep.Spec.Replicas {
		t.Errorf("PodDisruptionBudget maxUnavailable %d with %d replicas", m.pdb.Spec.MaxUnavailable, dep.Spec.Replicas)
	}

	// Drain: the grace period covers the preStop pause and the node's
	// shutdown timeout.
	cmd := c.Lifecycle.PreStop.Exec.Command
	if len(cmd) != 2 || cmd[0] != "sleep" {
		t.Fatalf("preStop %q, want [sleep N]", cmd)
	}
	pause, err := time.ParseDuration(cmd[1] + "s")
	if err != nil || pause < 5*time.Second {
		t.Errorf("preStop pause %q: endpoints need a few seconds to drop the pod", cmd[1])
	}
	grace := time.Duration(pod.TerminationGracePeriodSeconds) * time.Second
	if grace < pause+cfg.ShutdownTimeout+5*time.Second {
		t.Errorf("terminationGracePeriodSeconds %v < preStop %v + shutdown-timeout %v + 5s", grace, pause, cfg.ShutdownTimeout)
	}

	// Resources.
	for _, k := range []string{"cpu", "memory"} {
		if c.Resources.Requests[k] == "" {
			t.Errorf("no %s request", k)
		}
	}
	if c.Resources.Limits["memory"] == "" {
		t.Error("no memory limit")
	}

	// Key files come from a Secret, mounted read-only, readable by the
	// image's user and nobody else.
	mounts := map[string]string{}
	for _, vm := range c.VolumeMounts {
		if !vm.ReadOnly {
			t.Errorf("volume %s is mounted writable", vm.Name)
		}
		mounts[vm.MountPath] = vm.Name
	}
	secretVols := map[string]int{}
	for _, v := range pod.Volumes {
		if v.Secret != nil {
			secretVols[v.Name] = v.Secret.DefaultMode
		}
	}
	for _, k := range []string{"PLAIT_AUTH_KEY_FILE", "PLAIT_ENCRYPTION_KEY_FILE"} {
		vol, ok := mounts[filepath.Dir(env[k])]
		if !ok {
			t.Errorf("%s %s is in no mounted volume", k, env[k])
			continue
		}
		mode, ok := secretVols[vol]
		if !ok {
			t.Errorf("%s: volume %s is not a Secret", k, vol)
		}
		if mode&0o007 != 0 || mode&0o222 != 0 {
			t.Errorf("%s: Secret mode %o lets others read or anyone write", k, mode)
		}
	}

	// The pod runs as the image's unprivileged user.
	uid := imageUID(t)
	sc := pod.SecurityContext
	if !sc.RunAsNonRoot || sc.RunAsUser != uid || sc.FSGroup == 0 || sc.SeccompProfile.Type != "RuntimeDefault" {
		t.Errorf("pod securityContext %+v (the image's user is %d)", sc, uid)
	}
	csc := c.SecurityContext
	if csc.AllowPrivilegeEscalation == nil || *csc.AllowPrivilegeEscalation || !csc.ReadOnlyRootFilesystem || !slices.Equal(csc.Capabilities.Drop, []string{"ALL"}) {
		t.Errorf("container securityContext %+v", csc)
	}
	if pod.AutomountServiceAccountToken {
		t.Error("the node needs no Kubernetes API token")
	}
	if len(m.kust.Images) != 1 || m.kust.Images[0].Name != c.Image {
		t.Errorf("kustomization images %+v do not name the container's image %q", m.kust.Images, c.Image)
	}
}

// imageUID is the uid the Dockerfile gives the node's user.
func imageUID(t *testing.T) int {
	t.Helper()
	b, err := os.ReadFile("../../Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`useradd [^\n]*--uid (\d+)`).FindSubmatch(b)
	if m == nil {
		t.Fatal("Dockerfile: no useradd --uid")
	}
	var uid int
	fmt.Sscan(string(m[1]), &uid)
	return uid
}
