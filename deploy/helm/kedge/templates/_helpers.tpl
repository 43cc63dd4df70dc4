{{/*
Expand the name of the chart.
*/}}
{{- define "kedge.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
A default fully qualified app name, truncated at 63 characters (some Kubernetes name fields
are limited to that). A release name that already contains the chart name is used as is.
*/}}
{{- define "kedge.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Chart name and version, as used by the chart label.
*/}}
{{- define "kedge.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Common labels.
*/}}
{{- define "kedge.labels" -}}
helm.sh/chart: {{ include "kedge.chart" . }}
{{ include "kedge.selectorLabels" . }}
{{- if .Chart.AppVersion }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/*
Selector labels.
*/}}
{{- define "kedge.selectorLabels" -}}
app.kubernetes.io/name: {{ include "kedge.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
The name of the service account to use.
*/}}
{{- define "kedge.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "kedge.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
The admin port, from config.admin.address. The kubelet's probes and Prometheus reach the pod
IP, so the admin listener must not be bound to loopback (kedge's own default).
*/}}
{{- define "kedge.adminPort" -}}
{{- $address := required "config.admin.address must be set to a pod address such as 0.0.0.0:9901: the probes and /metrics are reached on the pod IP (kedge's default, 127.0.0.1:9901, is loopback)" (dig "admin" "address" "" .Values.config) }}
{{- if regexMatch "^(127\\.|localhost:|\\[::1\\]:)" $address }}
{{- fail (printf "config.admin.address %s is loopback: the kubelet's probes cannot reach it (use 0.0.0.0:%s)" $address (regexReplaceAll ".*:" $address "")) }}
{{- end }}
{{- regexReplaceAll ".*:" $address "" }}
{{- end }}

{{/*
Checks that config.listeners can become container and Service ports: each listener has a
name that is a valid port name (not "admin") and binds an address other pods can reach.
Renders nothing.
*/}}
{{- define "kedge.checkListeners" -}}
{{- range $i, $listener := required "config.listeners is required (at least one listener)" .Values.config.listeners }}
{{- $name := required (printf "config.listeners[%d].name is required: the chart names the container and Service ports after it" $i) $listener.name }}
{{- if not (regexMatch "^[a-z]([-a-z0-9]{0,13}[a-z0-9])?$" $name) }}
{{- fail (printf "config.listeners[%d].name %q must be a Kubernetes port name: lower-case letters, digits and '-', at most 15 characters, starting with a letter" $i $name) }}
{{- end }}
{{- if eq $name "admin" }}
{{- fail (printf "config.listeners[%d].name must not be \"admin\": the chart uses that port name for the admin listener" $i) }}
{{- end }}
{{- $address := required (printf "config.listeners[%d].address is required" $i) $listener.address }}
{{- if regexMatch "^(127\\.|localhost:|\\[::1\\]:)" $address }}
{{- fail (printf "config.listeners[%d].address %s is loopback: nothing outside the pod can reach it (use 0.0.0.0:%s)" $i $address (regexReplaceAll ".*:" $address "")) }}
{{- end }}
{{- end }}
{{- end }}

{{/*
The only API access the edge needs: its k8s resolvers watch EndpointSlices, and read Services
for named ports and route discovery (Services labelled kedge-exposed).
*/}}
{{- define "kedge.rbacRules" -}}
- apiGroups:
    - discovery.k8s.io
  resources:
    - endpointslices
  verbs:
    - get
    - list
    - watch
- apiGroups:
    - ""
  resources:
    - services
  verbs:
    - get
    - list
    - watch
{{- end }}
