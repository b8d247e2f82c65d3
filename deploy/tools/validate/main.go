// Command validate checks Kubernetes manifests offline, the way the API server would
// decode them, without a cluster or the internet.
//
// Usage:
//
//	kustomize build deploy/k8s/overlays/cpu | validate
//	validate FILE...
//
// Every document is decoded strictly into its Go type: the built-in kinds from
// k8s.io/api (the API server's own types), ServiceMonitor and PrometheusRule from the
// Prometheus Operator's API module, ScaledObject and TriggerAuthentication from KEDA's.
// Strict means an unknown or duplicated field, a wrong type or an unparsable quantity is
// an error, and so is a kind none of those modules defines. Then the checks the API
// server or the operators would make at admission and that strict decoding cannot see:
// names, labels and required fields, selectors that select their own pod template,
// probes and ports that name a declared container port, KEDA's own trigger and replica
// validation. It prints one line per object and exits 1 if any object is invalid.
package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"reflect"
	"strings"

	kedav1alpha1 "github.com/kedacore/keda/v2/apis/keda/v1alpha1"
	"github.com/kedacore/keda/v2/pkg/scalers/scalersconfig"
	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	metavalidation "k8s.io/apimachinery/pkg/apis/meta/v1/validation"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer/json"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/util/validation/field"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
)

func main() {
	scheme := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{
		clientgoscheme.AddToScheme, monitoringv1.AddToScheme, kedav1alpha1.AddToScheme,
	} {
		if err := add(scheme); err != nil {
			fmt.Fprintln(os.Stderr, "validate:", err)
			os.Exit(2)
		}
	}
	decoder := json.NewSerializerWithOptions(json.DefaultMetaFactory, scheme, scheme,
		json.SerializerOptions{Yaml: false, Strict: true})

	var inputs []namedReader
	if len(os.Args) > 1 {
		for _, path := range os.Args[1:] {
			f, err := os.Open(path)
			if err != nil {
				fmt.Fprintln(os.Stderr, "validate:", err)
				os.Exit(2)
			}
			defer f.Close()
			inputs = append(inputs, namedReader{path, f})
		}
	} else {
		inputs = append(inputs, namedReader{"<stdin>", os.Stdin})
	}

	failed, count := 0, 0
	for _, in := range inputs {
		docs, err := splitDocuments(in.r)
		if err != nil {
			fmt.Fprintf(os.Stderr, "%s: %v\n", in.name, err)
			os.Exit(2)
		}
		for i, doc := range docs {
			count++
			where := fmt.Sprintf("%s#%d", in.name, i+1)
			obj, gvk, err := decoder.Decode(doc, nil, nil)
			if err != nil {
				failed++
				fmt.Printf("INVALID %s: %v\n", where, err)
				continue
			}
			id := fmt.Sprintf("%s/%s", gvk.Kind, nameOf(obj))
			if errs := check(obj); len(errs) > 0 {
				failed++
				for _, e := range errs {
					fmt.Printf("INVALID %s (%s): %v\n", id, where, e)
				}
				continue
			}
			fmt.Printf("ok      %s %s\n", gvk.GroupVersion(), id)
		}
	}
	if count == 0 {
		fmt.Println("INVALID: no objects in the input")
		os.Exit(1)
	}
	if failed > 0 {
		fmt.Printf("%d of %d objects invalid\n", failed, count)
		os.Exit(1)
	}
	fmt.Printf("%d objects valid\n", count)
}

type namedReader struct {
	name string
	r    io.Reader
}

// splitDocuments returns each non-empty YAML document of the stream as JSON.
func splitDocuments(r io.Reader) ([][]byte, error) {
	reader := utilyaml.NewYAMLReader(bufio.NewReader(r))
	var docs [][]byte
	for {
		doc, err := reader.Read()
		if errors.Is(err, io.EOF) {
			return docs, nil
		}
		if err != nil {
			return nil, err
		}
		if len(bytes.TrimSpace(stripComments(doc))) == 0 {
			continue
		}
		j, err := utilyaml.ToJSON(doc)
		if err != nil {
			return nil, err
		}
		docs = append(docs, j)
	}
}

func stripComments(doc []byte) []byte {
	var out bytes.Buffer
	for _, line := range bytes.Split(doc, []byte("\n")) {
		if t := bytes.TrimSpace(line); len(t) > 0 && t[0] != '#' {
			out.Write(line)
			out.WriteByte('\n')
		}
	}
	return out.Bytes()
}

func nameOf(obj runtime.Object) string {
	if m, ok := obj.(metav1.Object); ok {
		return m.GetName()
	}
	return "?"
}

// check applies the admission-time rules strict decoding cannot express.
func check(obj runtime.Object) field.ErrorList {
	var errs field.ErrorList
	if m, ok := obj.(metav1.Object); ok {
		errs = append(errs, checkMeta(m)...)
	}
	switch o := obj.(type) {
	case *appsv1.Deployment:
		errs = append(errs, checkDeployment(o)...)
	case *corev1.Service:
		errs = append(errs, checkService(o)...)
	case *corev1.ConfigMap, *corev1.Secret, *corev1.Namespace, *corev1.ServiceAccount:
	case *policyv1.PodDisruptionBudget:
		errs = append(errs, checkPDB(o)...)
	case *networkingv1.NetworkPolicy:
		errs = append(errs, checkNetworkPolicy(o)...)
	case *autoscalingv2.HorizontalPodAutoscaler:
		errs = append(errs, checkHPA(o)...)
	case *monitoringv1.ServiceMonitor:
		errs = append(errs, checkServiceMonitor(o)...)
	case *monitoringv1.PrometheusRule:
		errs = append(errs, checkPrometheusRule(o)...)
	case *kedav1alpha1.ScaledObject:
		errs = append(errs, checkScaledObject(o)...)
	default:
		errs = append(errs, field.Forbidden(field.NewPath("kind"),
			fmt.Sprintf("%T has no checks in this validator: add them before deploying it", obj)))
	}
	return errs
}

func checkMeta(m metav1.Object) field.ErrorList {
	p := field.NewPath("metadata")
	var errs field.ErrorList
	if m.GetName() == "" {
		errs = append(errs, field.Required(p.Child("name"), ""))
	}
	for _, msg := range validation.IsDNS1123Subdomain(m.GetName()) {
		errs = append(errs, field.Invalid(p.Child("name"), m.GetName(), msg))
	}
	if ns := m.GetNamespace(); ns != "" {
		for _, msg := range validation.IsDNS1123Label(ns) {
			errs = append(errs, field.Invalid(p.Child("namespace"), ns, msg))
		}
	}
	errs = append(errs, metavalidation.ValidateLabels(m.GetLabels(), p.Child("labels"))...)
	return errs
}

func checkSelector(sel *metav1.LabelSelector, path *field.Path, podLabels map[string]string) field.ErrorList {
	if sel == nil || (len(sel.MatchLabels) == 0 && len(sel.MatchExpressions) == 0) {
		return field.ErrorList{field.Required(path, "an empty selector would select every pod")}
	}
	errs := metavalidation.ValidateLabelSelector(sel, metavalidation.LabelSelectorValidationOptions{}, path)
	if podLabels != nil && len(errs) == 0 {
		s, err := metav1.LabelSelectorAsSelector(sel)
		if err != nil {
			return append(errs, field.Invalid(path, sel, err.Error()))
		}
		if !s.Matches(labels.Set(podLabels)) {
			errs = append(errs, field.Invalid(path, sel, "does not match the pod template's labels"))
		}
	}
	return errs
}

func checkDeployment(d *appsv1.Deployment) field.ErrorList {
	spec := field.NewPath("spec")
	errs := checkSelector(d.Spec.Selector, spec.Child("selector"), d.Spec.Template.Labels)
	errs = append(errs, checkPodSpec(&d.Spec.Template.Spec, spec.Child("template", "spec"))...)
	return errs
}

func checkPodSpec(pod *corev1.PodSpec, path *field.Path) field.ErrorList {
	var errs field.ErrorList
	if len(pod.Containers) == 0 {
		errs = append(errs, field.Required(path.Child("containers"), ""))
	}
	volumes := map[string]bool{}
	for i, v := range pod.Volumes {
		vp := path.Child("volumes").Index(i)
		for _, msg := range validation.IsDNS1123Label(v.Name) {
			errs = append(errs, field.Invalid(vp.Child("name"), v.Name, msg))
		}
		if volumes[v.Name] {
			errs = append(errs, field.Duplicate(vp.Child("name"), v.Name))
		}
		volumes[v.Name] = true
	}
	for i := range pod.Containers {
		errs = append(errs, checkContainer(&pod.Containers[i], path.Child("containers").Index(i), volumes)...)
	}
	return errs
}

func checkContainer(c *corev1.Container, path *field.Path, volumes map[string]bool) field.ErrorList {
	var errs field.ErrorList
	if c.Name == "" {
		errs = append(errs, field.Required(path.Child("name"), ""))
	}
	if c.Image == "" {
		errs = append(errs, field.Required(path.Child("image"), ""))
	}
	ports := map[string]int32{}
	for i, p := range c.Ports {
		pp := path.Child("ports").Index(i)
		if p.Name != "" {
			for _, msg := range validation.IsValidPortName(p.Name) {
				errs = append(errs, field.Invalid(pp.Child("name"), p.Name, msg))
			}
			ports[p.Name] = p.ContainerPort
		}
		for _, msg := range validation.IsValidPortNum(int(p.ContainerPort)) {
			errs = append(errs, field.Invalid(pp.Child("containerPort"), p.ContainerPort, msg))
		}
	}
	for name, probe := range map[string]*corev1.Probe{
		"livenessProbe": c.LivenessProbe, "readinessProbe": c.ReadinessProbe, "startupProbe": c.StartupProbe,
	} {
		if probe == nil {
			continue
		}
		if probe.HTTPGet == nil && probe.TCPSocket == nil && probe.Exec == nil && probe.GRPC == nil {
			errs = append(errs, field.Required(path.Child(name), "one handler (httpGet, tcpSocket, exec, grpc)"))
		}
		if probe.HTTPGet != nil {
			errs = append(errs, checkPortRef(probe.HTTPGet.Port, ports, path.Child(name, "httpGet", "port"))...)
		}
		if name != "readinessProbe" && probe.SuccessThreshold > 1 {
			errs = append(errs, field.Invalid(path.Child(name, "successThreshold"), probe.SuccessThreshold, "must be 1"))
		}
	}
	for i, e := range c.Env {
		ep := path.Child("env").Index(i)
		for _, msg := range validation.IsEnvVarName(e.Name) {
			errs = append(errs, field.Invalid(ep.Child("name"), e.Name, msg))
		}
		if e.Value != "" && e.ValueFrom != nil {
			errs = append(errs, field.Invalid(ep, e.Name, "value and valueFrom are exclusive"))
		}
		if e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil {
			ref := e.ValueFrom.SecretKeyRef
			if ref.Name == "" || ref.Key == "" {
				errs = append(errs, field.Required(ep.Child("valueFrom", "secretKeyRef"), "name and key"))
			}
		}
	}
	for i, m := range c.VolumeMounts {
		if !volumes[m.Name] {
			errs = append(errs, field.NotFound(path.Child("volumeMounts").Index(i).Child("name"), m.Name))
		}
		if !strings.HasPrefix(m.MountPath, "/") {
			errs = append(errs, field.Invalid(path.Child("volumeMounts").Index(i).Child("mountPath"), m.MountPath,
				"must be absolute"))
		}
	}
	for name, limit := range c.Resources.Limits {
		if req, ok := c.Resources.Requests[name]; ok && req.Cmp(limit) > 0 {
			errs = append(errs, field.Invalid(path.Child("resources", "requests").Key(string(name)), req.String(),
				"must be less than or equal to the limit "+limit.String()))
		}
	}
	// Extended resources (nvidia.com/gpu) cannot be overcommitted: request == limit.
	for name, req := range c.Resources.Requests {
		if strings.Contains(string(name), "/") && !strings.HasPrefix(string(name), "kubernetes.io/") {
			if limit, ok := c.Resources.Limits[name]; !ok || limit.Cmp(req) != 0 {
				errs = append(errs, field.Invalid(path.Child("resources", "requests").Key(string(name)), req.String(),
					"an extended resource's request must equal its limit"))
			}
		}
	}
	return errs
}

func checkPortRef(port intstr.IntOrString, named map[string]int32, path *field.Path) field.ErrorList {
	if port.Type == intstr.String {
		if _, ok := named[port.StrVal]; !ok {
			return field.ErrorList{field.NotFound(path, port.StrVal)}
		}
		return nil
	}
	var errs field.ErrorList
	for _, msg := range validation.IsValidPortNum(port.IntValue()) {
		errs = append(errs, field.Invalid(path, port.IntValue(), msg))
	}
	return errs
}

func checkService(s *corev1.Service) field.ErrorList {
	var errs field.ErrorList
	path := field.NewPath("spec", "ports")
	if len(s.Spec.Ports) == 0 {
		errs = append(errs, field.Required(path, ""))
	}
	for i, p := range s.Spec.Ports {
		if len(s.Spec.Ports) > 1 && p.Name == "" {
			errs = append(errs, field.Required(path.Index(i).Child("name"), "required with several ports"))
		}
		for _, msg := range validation.IsValidPortNum(int(p.Port)) {
			errs = append(errs, field.Invalid(path.Index(i).Child("port"), p.Port, msg))
		}
		if p.TargetPort.Type == intstr.String {
			for _, msg := range validation.IsValidPortName(p.TargetPort.StrVal) {
				errs = append(errs, field.Invalid(path.Index(i).Child("targetPort"), p.TargetPort.StrVal, msg))
			}
		}
	}
	return errs
}

func checkPDB(p *policyv1.PodDisruptionBudget) field.ErrorList {
	spec := field.NewPath("spec")
	errs := checkSelector(p.Spec.Selector, spec.Child("selector"), nil)
	if (p.Spec.MinAvailable == nil) == (p.Spec.MaxUnavailable == nil) {
		errs = append(errs, field.Invalid(spec, "", "exactly one of minAvailable and maxUnavailable"))
	}
	return errs
}

func checkNetworkPolicy(n *networkingv1.NetworkPolicy) field.ErrorList {
	spec := field.NewPath("spec")
	var errs field.ErrorList
	errs = append(errs, metavalidation.ValidateLabelSelector(&n.Spec.PodSelector,
		metavalidation.LabelSelectorValidationOptions{}, spec.Child("podSelector"))...)
	for _, t := range n.Spec.PolicyTypes {
		if t != networkingv1.PolicyTypeIngress && t != networkingv1.PolicyTypeEgress {
			errs = append(errs, field.NotSupported(spec.Child("policyTypes"), t, []string{"Ingress", "Egress"}))
		}
	}
	checkPorts := func(ports []networkingv1.NetworkPolicyPort, path *field.Path) {
		for i, p := range ports {
			if p.Port != nil && p.Port.Type == intstr.String {
				for _, msg := range validation.IsValidPortName(p.Port.StrVal) {
					errs = append(errs, field.Invalid(path.Index(i).Child("port"), p.Port.StrVal, msg))
				}
			} else if p.Port != nil {
				for _, msg := range validation.IsValidPortNum(p.Port.IntValue()) {
					errs = append(errs, field.Invalid(path.Index(i).Child("port"), p.Port.IntValue(), msg))
				}
			}
		}
	}
	for i, r := range n.Spec.Ingress {
		checkPorts(r.Ports, spec.Child("ingress").Index(i).Child("ports"))
	}
	for i, r := range n.Spec.Egress {
		checkPorts(r.Ports, spec.Child("egress").Index(i).Child("ports"))
	}
	return errs
}

func checkHPA(h *autoscalingv2.HorizontalPodAutoscaler) field.ErrorList {
	spec := field.NewPath("spec")
	var errs field.ErrorList
	if h.Spec.ScaleTargetRef.Kind == "" || h.Spec.ScaleTargetRef.Name == "" {
		errs = append(errs, field.Required(spec.Child("scaleTargetRef"), "kind and name"))
	}
	if h.Spec.MinReplicas != nil && (*h.Spec.MinReplicas < 1 || *h.Spec.MinReplicas > h.Spec.MaxReplicas) {
		errs = append(errs, field.Invalid(spec.Child("minReplicas"), *h.Spec.MinReplicas, "must be 1..maxReplicas"))
	}
	if h.Spec.MaxReplicas < 1 {
		errs = append(errs, field.Invalid(spec.Child("maxReplicas"), h.Spec.MaxReplicas, "must be at least 1"))
	}
	if len(h.Spec.Metrics) == 0 {
		errs = append(errs, field.Required(spec.Child("metrics"), ""))
	}
	for i, m := range h.Spec.Metrics {
		mp := spec.Child("metrics").Index(i)
		if m.Type == autoscalingv2.ExternalMetricSourceType && (m.External == nil || m.External.Metric.Name == "") {
			errs = append(errs, field.Required(mp.Child("external", "metric", "name"), ""))
		}
	}
	return errs
}

func checkServiceMonitor(s *monitoringv1.ServiceMonitor) field.ErrorList {
	spec := field.NewPath("spec")
	errs := checkSelector(&s.Spec.Selector, spec.Child("selector"), nil)
	if len(s.Spec.Endpoints) == 0 {
		errs = append(errs, field.Required(spec.Child("endpoints"), ""))
	}
	for i, e := range s.Spec.Endpoints {
		if (e.Port == "") == (e.TargetPort == nil) {
			errs = append(errs, field.Invalid(spec.Child("endpoints").Index(i), "", "exactly one of port and targetPort"))
		}
	}
	return errs
}

func checkPrometheusRule(r *monitoringv1.PrometheusRule) field.ErrorList {
	path := field.NewPath("spec", "groups")
	var errs field.ErrorList
	if len(r.Spec.Groups) == 0 {
		errs = append(errs, field.Required(path, ""))
	}
	groups := map[string]bool{}
	for i, g := range r.Spec.Groups {
		gp := path.Index(i)
		if g.Name == "" || groups[g.Name] {
			errs = append(errs, field.Invalid(gp.Child("name"), g.Name, "required and unique"))
		}
		groups[g.Name] = true
		for j, rule := range g.Rules {
			rp := gp.Child("rules").Index(j)
			if (rule.Alert == "") == (rule.Record == "") {
				errs = append(errs, field.Invalid(rp, "", "exactly one of alert and record"))
			}
			if rule.Expr.String() == "" {
				errs = append(errs, field.Required(rp.Child("expr"), ""))
			}
		}
	}
	return errs
}

func checkScaledObject(so *kedav1alpha1.ScaledObject) field.ErrorList {
	spec := field.NewPath("spec")
	var errs field.ErrorList
	if so.Spec.ScaleTargetRef == nil || so.Spec.ScaleTargetRef.Name == "" {
		errs = append(errs, field.Required(spec.Child("scaleTargetRef", "name"), ""))
	}
	if len(so.Spec.Triggers) == 0 {
		errs = append(errs, field.Required(spec.Child("triggers"), ""))
	}
	// KEDA's admission webhook runs these same functions.
	for _, err := range []error{
		kedav1alpha1.ValidateTriggers(so.Spec.Triggers),
		kedav1alpha1.CheckReplicaCountBoundsAreValid(so),
		kedav1alpha1.CheckFallbackValid(so),
	} {
		if err != nil {
			errs = append(errs, field.Invalid(spec, "", err.Error()))
		}
	}
	for i, t := range so.Spec.Triggers {
		if t.Type == "kafka" {
			errs = append(errs, checkKafkaTrigger(t.Metadata, spec.Child("triggers").Index(i).Child("metadata"))...)
		}
	}
	return errs
}

// kafkaTrigger is the trigger-metadata part of KEDA's kafka scaler configuration
// (pkg/scalers/kafka_scaler.go, kafkaMetadata, of the pinned KEDA version): the scaler
// package itself pulls in every scaler's cloud SDK. KEDA's own typed-config parser reads
// it, so required keys, types, enums and defaults are KEDA's.
type kafkaTrigger struct {
	BootstrapServers                   []string `keda:"name=bootstrapServers,order=triggerMetadata"`
	ConsumerGroup                      string   `keda:"name=consumerGroup,order=triggerMetadata"`
	Topic                              string   `keda:"name=topic,order=triggerMetadata,optional"`
	PartitionLimitation                string   `keda:"name=partitionLimitation,order=triggerMetadata,optional"`
	LagThreshold                       int64    `keda:"name=lagThreshold,order=triggerMetadata,default=10"`
	ActivationLagThreshold             int64    `keda:"name=activationLagThreshold,order=triggerMetadata,default=0"`
	OffsetResetPolicy                  string   `keda:"name=offsetResetPolicy,order=triggerMetadata,default=latest,enum=latest;earliest"`
	AllowIdleConsumers                 bool     `keda:"name=allowIdleConsumers,order=triggerMetadata,default=false"`
	ExcludePersistentLag               bool     `keda:"name=excludePersistentLag,order=triggerMetadata,default=false"`
	ScaleToZeroOnInvalidOffset         bool     `keda:"name=scaleToZeroOnInvalidOffset,order=triggerMetadata,default=false"`
	LimitToPartitionsWithLag           bool     `keda:"name=limitToPartitionsWithLag,order=triggerMetadata,default=false"`
	EnsureEvenDistributionOfPartitions bool     `keda:"name=ensureEvenDistributionOfPartitions,order=triggerMetadata,default=false"`
	FullMetadata                       bool     `keda:"name=fullMetadata,order=triggerMetadata,default=true"`
	Version                            string   `keda:"name=version,order=triggerMetadata,optional"`
	TLS                                string   `keda:"name=tls,order=triggerMetadata,default=disable,enum=enable;disable"`
	UnsafeSsl                          bool     `keda:"name=unsafeSsl,order=triggerMetadata,default=false"`
	Sasl                               string   `keda:"name=sasl,order=triggerMetadata,optional,enum=none;plaintext;scram_sha256;scram_sha512;oauthbearer;gssapi"`
	SaslTokenProvider                  string   `keda:"name=saslTokenProvider,order=triggerMetadata,optional,enum=bearer;aws_msk_iam"`
	AWSRegion                          string   `keda:"name=awsRegion,order=triggerMetadata,optional"`

	TriggerIndex int
}

// Validate repeats kafkaMetadata.Validate's checks on the trigger metadata.
func (m *kafkaTrigger) Validate() error {
	if m.LagThreshold <= 0 {
		return errors.New(`"lagThreshold" must be positive number`)
	}
	if m.ActivationLagThreshold < 0 {
		return errors.New(`"activationLagThreshold" must be a non-negative number`)
	}
	if m.LimitToPartitionsWithLag && m.AllowIdleConsumers {
		return errors.New("allowIdleConsumers and limitToPartitionsWithLag cannot be set simultaneously")
	}
	if m.LimitToPartitionsWithLag && m.Topic == "" {
		return errors.New("topic must be specified when using limitToPartitionsWithLag")
	}
	return nil
}

func checkKafkaTrigger(meta map[string]string, path *field.Path) field.ErrorList {
	var errs field.ErrorList
	config := scalersconfig.ScalerConfig{TriggerType: "kafka", TriggerMetadata: meta}
	if err := config.TypedConfig(&kafkaTrigger{}); err != nil {
		errs = append(errs, field.Invalid(path, "", err.Error()))
	}
	// KEDA only logs keys it does not know; a misspelt key silently keeps its default.
	known := map[string]bool{}
	t := reflect.TypeFor[kafkaTrigger]()
	for i := 0; i < t.NumField(); i++ {
		if tag, ok := t.Field(i).Tag.Lookup("keda"); ok {
			known[strings.TrimPrefix(strings.Split(tag, ",")[0], "name=")] = true
		}
	}
	for key := range meta {
		if !known[key] {
			errs = append(errs, field.NotSupported[string](path.Key(key), key, nil))
		}
	}
	return errs
}
