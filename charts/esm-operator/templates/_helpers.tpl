{{/*
Chart name, truncated to 63 characters (the DNS label limit of names and label values).
*/}}
{{- define "esm-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Full name, the prefix of every namespaced resource: <release>-<chart>, or the release name
when it already contains the chart name (`helm install esm-operator ...` -> esm-operator).
*/}}
{{- define "esm-operator.fullname" -}}
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
Name of cluster-scoped objects (ClusterRole, ClusterRoleBinding): the full name is unique
per namespace only, so add the namespace.
*/}}
{{- define "esm-operator.clusterName" -}}
{{- printf "%s-%s" (include "esm-operator.fullname" .) .Release.Namespace | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
helm.sh/chart label value.
*/}}
{{- define "esm-operator.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Standard labels of every object the chart renders (except the CRD, kept byte-for-byte).
*/}}
{{- define "esm-operator.labels" -}}
helm.sh/chart: {{ include "esm-operator.chart" . }}
{{ include "esm-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/*
Selector labels: immutable once the Deployment exists, so only name and instance.
*/}}
{{- define "esm-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "esm-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
The operator's ServiceAccount.
*/}}
{{- define "esm-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "esm-operator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
The image, for the operator and (passed as --poller-image) for the pollers.
*/}}
{{- define "esm-operator.image" -}}
{{- printf "%s:%s" .Values.image.repository (toString (default .Chart.AppVersion .Values.image.tag)) }}
{{- end }}

{{/*
Labels of one alert: its severity, then metrics.prometheusRule.alertLabels (which may
override it). Called with (list $ "warning").
*/}}
{{- define "esm-operator.alertLabels" -}}
{{- $root := index . 0 }}
{{- toYaml (merge (deepCopy $root.Values.metrics.prometheusRule.alertLabels) (dict "severity" (index . 1))) }}
{{- end }}

{{/*
The runbook of an alert: its section in docs/operations.md. Called with (list $ "AlertName").
*/}}
{{- define "esm-operator.runbook" -}}
{{- printf "%s/blob/main/docs/operations.md#%s" (index . 0).Chart.Home (lower (index . 1)) }}
{{- end }}
