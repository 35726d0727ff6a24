{{/* Names and labels shared by every template of the chart. */}}

{{- define "mercato-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The release's full name: names the Deployment, ServiceAccount, RBAC and Lease. */}}
{{- define "mercato-operator.fullname" -}}
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

{{- define "mercato-operator.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "mercato-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "mercato-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "mercato-operator.labels" -}}
helm.sh/chart: {{ include "mercato-operator.chart" . }}
{{ include "mercato-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: operator
app.kubernetes.io/part-of: mercato
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "mercato-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "mercato-operator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "mercato-operator.leaseName" -}}
{{- default (include "mercato-operator.fullname" .) .Values.leaderElection.leaseName }}
{{- end }}

{{/* The operator image: image.repository, else <images.registry>/operator. */}}
{{- define "mercato-operator.image" -}}
{{- $repository := .Values.image.repository | default (printf "%s/operator" .Values.images.registry) }}
{{- if .Values.image.digest }}
{{- printf "%s@%s" $repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" $repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* Namespace of the Store the chart may create: its own setting, else the watched
namespace (a Store elsewhere would never be reconciled), else the release's. */}}
{{- define "mercato-operator.storeNamespace" -}}
{{- $ns := .Values.store.namespace | default .Values.watchNamespace | default .Release.Namespace }}
{{- if and .Values.watchNamespace (ne $ns .Values.watchNamespace) }}
{{- fail (printf "store.namespace %q is not watched: the operator watches only %q (watchNamespace)" $ns .Values.watchNamespace) }}
{{- end }}
{{- $ns }}
{{- end }}
