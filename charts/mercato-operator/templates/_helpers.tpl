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

{{/* The namespaces the operator reconciles Stores in, comma separated; empty when it
watches every namespace (watchAllNamespaces). */}}
{{- define "mercato-operator.watchNamespaces" -}}
{{- if .Values.watchAllNamespaces }}
{{- if .Values.watchNamespaces }}
{{- fail "watchNamespaces must be empty when watchAllNamespaces is true" }}
{{- end }}
{{- else }}
{{- .Values.watchNamespaces | default (list .Release.Namespace) | join "," }}
{{- end }}
{{- end }}

{{/* Namespace of the Store the chart may create: its own setting, else the first watched
namespace (a Store elsewhere would never be reconciled), else the release's. */}}
{{- define "mercato-operator.storeNamespace" -}}
{{- $watched := include "mercato-operator.watchNamespaces" . }}
{{- $ns := .Values.store.namespace | default (first (splitList "," $watched)) | default .Release.Namespace }}
{{- if and $watched (not (has $ns (splitList "," $watched))) }}
{{- fail (printf "store.namespace %q is not watched: the operator watches only %q (watchNamespaces)" $ns $watched) }}
{{- end }}
{{- $ns }}
{{- end }}
