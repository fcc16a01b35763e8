{{/* Names and labels. */}}
{{- define "bcp.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "bcp.fullname" -}}
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

{{- define "bcp.selectorLabels" -}}
app.kubernetes.io/name: {{ include "bcp.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "bcp.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "bcp.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "bcp.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "bcp.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "bcp.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* Paths inside the container. */}}
{{- define "bcp.configDir" -}}/etc/build-cache-proxy/config{{- end }}
{{- define "bcp.secretDir" -}}/etc/build-cache-proxy/secrets{{- end }}
{{- define "bcp.tlsDir" -}}/etc/build-cache-proxy/tls{{- end }}

{{/* The Secret the credentials come from: the user's own, or the one this chart creates. */}}
{{- define "bcp.secretName" -}}
{{- default (printf "%s-credentials" (include "bcp.fullname" .)) .Values.auth.existingSecret }}
{{- end }}

{{/* True ("true") when any credential is configured, so a Secret must be mounted. */}}
{{- define "bcp.hasCredentials" -}}
{{- if or .Values.auth.gradleUsers (and .Values.s3Api.enabled .Values.auth.s3Credentials) }}true{{ end }}
{{- end }}

{{/* Whether a listener speaks TLS: pass (list $ "gradle"). */}}
{{- define "bcp.tlsOn" -}}
{{- $root := index . 0 }}
{{- if and $root.Values.tls.enabled (has (index . 1) $root.Values.tls.listeners) }}true{{ end }}
{{- end }}

{{/* True ("true") when the chart makes the node-local address: the pod runs on the host network. */}}
{{- define "bcp.nodeLocal" -}}
{{- if .Values.s3Api.nodeLocalAddress }}
{{- if not .Values.s3Api.enabled }}
{{- fail "s3Api.nodeLocalAddress is where the S3 listener answers: it needs s3Api.enabled" }}
{{- end }}true
{{- end }}
{{- end }}

{{/* The Service's in-cluster DNS name. */}}
{{- define "bcp.serviceHost" -}}
{{- printf "%s.%s.svc" (include "bcp.fullname" .) .Release.Namespace }}
{{- end }}

{{/* The Gradle listener as build pods reach it: dependencies.initScript.url, or the Service. */}}
{{- define "bcp.gradleUrl" -}}
{{- $scheme := ternary "https" "http" (eq (include "bcp.tlsOn" (list . "gradle")) "true") }}
{{- .Values.dependencies.initScript.url | default (printf "%s://%s:%d" $scheme (include "bcp.serviceHost" .) (int .Values.ports.gradle)) }}
{{- end }}

{{/*
One TOML value from a Helm value: strings as TOML basic strings (JSON string escapes are valid
TOML), whole numbers as integers (Helm reads every YAML number as a float), booleans, and flat
lists of those. Anything else fails the render, naming the key.
*/}}
{{- define "bcp.tomlValue" -}}
{{- $key := index . 0 }}
{{- $v := index . 1 }}
{{- if kindIs "string" $v }}
{{- toJson $v }}
{{- else if kindIs "bool" $v }}
{{- $v }}
{{- else if or (kindIs "float64" $v) (kindIs "int64" $v) (kindIs "int" $v) }}
{{- if ne (float64 $v) (float64 (int64 $v)) }}
{{- fail (printf "config key %s: %v is not a whole number" $key $v) }}
{{- end }}
{{- int64 $v }}
{{- else if kindIs "slice" $v }}
{{- $items := list }}
{{- range $v }}
{{- if or (kindIs "map" .) (kindIs "slice" .) }}
{{- fail (printf "config key %s: a list may hold only strings, numbers and booleans" $key) }}
{{- end }}
{{- $items = append $items (include "bcp.tomlValue" (list $key .)) }}
{{- end }}
{{- printf "[%s]" (join ", " $items) }}
{{- else }}
{{- fail (printf "config key %s: only strings, numbers, booleans and lists of them become TOML (got %s)" $key (kindOf $v)) }}
{{- end }}
{{- end }}

{{/*
The `key = value` lines of one TOML table, sorted by key; null values are left out so the
daemon's default applies. Pass (list "section.path" $map).
*/}}
{{- define "bcp.tomlKeys" -}}
{{- $path := index . 0 }}
{{- $table := index . 1 }}
{{- range $k := keys $table | sortAlpha }}
{{- $v := index $table $k }}
{{- if not (kindIs "invalid" $v) }}
{{- if kindIs "map" $v }}
{{- fail (printf "config key %s.%s: nested tables are not supported; use a section of its own" $path $k) }}
{{- end }}
{{ $k }} = {{ include "bcp.tomlValue" (list (printf "%s.%s" $path $k) $v) }}
{{- end }}
{{- end }}
{{- end }}

{{/* The daemon's TOML configuration file. */}}
{{- define "bcp.configToml" -}}
{{- $v := .Values }}
{{- $cfg := deepCopy $v.config }}
{{- range $owned := list "gradle" "admin" "s3" }}
{{- if hasKey ($cfg.listen | default dict) $owned }}
{{- fail (printf "config.listen.%s is set by the chart (ports.%s, bindAddress); remove it" $owned $owned) }}
{{- end }}
{{- end }}
{{- if hasKey ($cfg.disk | default dict) "dir" }}
{{- fail "config.disk.dir is set by the chart (cache.mountPath); remove it" }}
{{- end }}
{{- if or (hasKey $cfg "tls") (hasKey $cfg "s3_api") }}
{{- fail "config.tls and config.s3_api are rendered from tls and s3Api; remove them from config" }}
{{- end }}
{{- range $owned := list "address" "interface" "run_as_user" "run_as_group" }}
{{- if hasKey ($cfg.node_local | default dict) $owned }}
{{- fail (printf "config.node_local.%s is set by the chart (s3Api.nodeLocalAddress, nodeLocalInterface, podSecurityContext); remove it" $owned) }}
{{- end }}
{{- end }}
{{- if hasKey ($cfg.gradle | default dict) "users" }}
{{- fail "config.gradle.users is rendered from auth.gradleUsers; remove it" }}
{{- end }}
{{- $bind := $v.bindAddress }}
{{- $listen := merge (dict "gradle" (printf "%s:%d" $bind (int $v.ports.gradle)) "admin" (printf "%s:%d" $bind (int $v.ports.admin))) ($cfg.listen | default dict) }}
{{- if include "bcp.nodeLocal" . }}
{{- /* The daemon makes the address and binds the S3 listener there, then drops to the pod's user. */}}
{{- $_ := set $listen "s3" (printf "%s:%d" $v.s3Api.nodeLocalAddress (int $v.s3Api.nodeLocalPort)) }}
{{- $node := dict "address" $v.s3Api.nodeLocalAddress "interface" $v.s3Api.nodeLocalInterface "run_as_user" (int $v.podSecurityContext.runAsUser) "run_as_group" (int $v.podSecurityContext.runAsGroup) }}
{{- $_ := set $cfg "node_local" (merge $node ($cfg.node_local | default dict)) }}
{{- if $v.networkPolicy.enabled }}
{{- /* No NetworkPolicy selects a host-network pod: the daemon filters sources itself. */}}
{{- $hn := $v.networkPolicy.hostNetwork | default dict }}
{{- if or (empty $hn.cacheFrom) (empty $hn.metricsFrom) }}
{{- fail "networkPolicy.enabled with s3Api.nodeLocalAddress: NetworkPolicies do not apply to the host-network pod, so the daemon admits sources itself; set networkPolicy.hostNetwork.cacheFrom (the build pods' networks) and metricsFrom (Prometheus')" }}
{{- end }}
{{- $_ := set $listen "cache_allow_from" $hn.cacheFrom }}
{{- $_ := set $listen "admin_allow_from" $hn.metricsFrom }}
{{- end }}
{{- else if $v.s3Api.enabled }}
{{- $_ := set $listen "s3" (printf "%s:%d" $bind (int $v.ports.s3)) }}
{{- else }}
{{- $_ := set $listen "s3" "" }}
{{- end }}
{{- $_ := set $cfg "listen" $listen }}
{{- $_ := set $cfg "disk" (merge (dict "dir" $v.cache.mountPath) ($cfg.disk | default dict)) }}
{{- $s3 := $cfg.s3 | default dict }}
{{- $_ := unset $cfg "s3" }}
# Rendered by the build-cache-proxy Helm chart from its values; edit the values, not this file.
{{- if include "bcp.nodeLocal" . }}
# On the host network (s3Api.nodeLocalAddress) the pod sets listen.gradle and listen.admin to
# its own address, the node's (BUILD_CACHE_PROXY_LISTEN_GRADLE and _ADMIN from status.podIP).
{{- end }}
{{- range $section := list "listen" "memory" "disk" }}
{{- if hasKey $cfg $section }}

[{{ $section }}]
{{- include "bcp.tomlKeys" (list $section (index $cfg $section)) }}
{{- $_ := unset $cfg $section }}
{{- end }}
{{- end }}
{{- if $s3.bucket }}

[s3]
{{- include "bcp.tomlKeys" (list "s3" $s3) }}
{{- end }}

[gradle]
{{- include "bcp.tomlKeys" (list "gradle" ($cfg.gradle | default dict)) }}
{{- $_ := unset $cfg "gradle" }}
{{- range $v.auth.gradleUsers }}

[[gradle.users]]
name = {{ toJson .name }}
password_file = {{ printf "%s/%s" (include "bcp.secretDir" $) .passwordKey | toJson }}
access = {{ toJson .access }}
{{- end }}
{{- range $section := keys $cfg | sortAlpha }}

[{{ $section }}]
{{- include "bcp.tomlKeys" (list $section (index $cfg $section)) }}
{{- end }}
{{- range $v.dependencies.maven }}

[[maven.repositories]]
{{- include "bcp.tomlKeys" (list "maven.repositories" .) }}
{{- end }}
{{- range $v.dependencies.downloads }}

[[downloads]]
{{- include "bcp.tomlKeys" (list "downloads" .) }}
{{- end }}
{{- if $v.tls.enabled }}

[tls]
cert_file = {{ printf "%s/tls.crt" (include "bcp.tlsDir" .) | toJson }}
key_file = {{ printf "%s/tls.key" (include "bcp.tlsDir" .) | toJson }}
listeners = {{ include "bcp.tomlValue" (list "tls.listeners" $v.tls.listeners) }}
reload_interval = {{ toJson $v.tls.reloadInterval }}
handshake_timeout = {{ toJson $v.tls.handshakeTimeout }}
{{- end }}
{{- if $v.s3Api.enabled }}
{{- with $v.s3Api.settings }}

[s3_api]
{{- include "bcp.tomlKeys" (list "s3_api" .) }}
{{- end }}
{{- range $v.auth.s3Credentials }}

[[s3_api.credentials]]
access_key = {{ toJson .accessKey }}
secret_key_file = {{ printf "%s/%s" (include "bcp.secretDir" $) .secretKeyKey | toJson }}

[s3_api.credentials.buckets]
{{- range $bucket, $access := .buckets }}
{{ toJson $bucket }} = {{ toJson $access }}
{{- end }}
{{- end }}
{{- range $v.s3Api.buckets }}

[[s3_api.buckets]]
{{- include "bcp.tomlKeys" (list "s3_api.buckets" .) }}
{{- end }}
{{- range $v.s3Api.forward }}

[[s3_api.forward]]
{{- include "bcp.tomlKeys" (list "s3_api.forward" .) }}
{{- end }}
{{- end }}
{{ end }}

{{/* Scrape relabeling that adds the `node` label the dashboard groups by. */}}
{{- define "bcp.nodeRelabeling" -}}
relabelings:
  - sourceLabels: [__meta_kubernetes_pod_node_name]
    targetLabel: node
    action: replace
{{- if eq (include "bcp.tlsOn" (list . "admin")) "true" }}
tlsConfig:
  # The certificate names the Service, not each pod's IP.
  insecureSkipVerify: true
{{- end }}
{{- end }}
