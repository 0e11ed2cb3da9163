{{/* Names, labels and the pieces of the bridge's config.yaml. */}}

{{- define "fab.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "fab.fullname" -}}
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

{{- define "fab.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "fab.selectorLabels" -}}
app.kubernetes.io/name: {{ include "fab.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "fab.labels" -}}
helm.sh/chart: {{ include "fab.chart" . }}
{{ include "fab.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "fab.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "fab.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "fab.image" -}}
{{- $tag := default .Chart.AppVersion .Values.image.tag }}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository $tag }}
{{- end }}
{{- end }}

{{- define "fab.secretName" -}}
{{- default (include "fab.fullname" .) .Values.existingSecret }}
{{- end }}

{{- define "fab.pvcName" -}}
{{- default (printf "%s-outbox" (include "fab.fullname" .)) .Values.persistence.existingClaim }}
{{- end }}

{{/* Where things live in the container. The outbox directory is the image's VOLUME. */}}
{{- define "fab.configDir" -}}/etc/feishu-alert-bridge/config{{- end }}
{{- define "fab.secretsDir" -}}/etc/feishu-alert-bridge/secrets{{- end }}
{{- define "fab.templatesDir" -}}/etc/feishu-alert-bridge/templates{{- end }}
{{- define "fab.dataDir" -}}/var/lib/feishu-alert-bridge{{- end }}
{{- define "fab.postgresSecretDir" -}}/etc/feishu-alert-bridge/postgres{{- end }}
{{- define "fab.postgresCaDir" -}}/etc/feishu-alert-bridge/postgres-ca{{- end }}

{{/*
True (non-empty) when the outbox is in PostgreSQL rather than in a SQLite file. The
default dict: `helm upgrade --reuse-values` from a chart before postgres.* has none.
*/}}
{{- define "fab.postgresOn" -}}
{{- if (.Values.postgres | default dict).enabled }}true{{ end }}
{{- end }}

{{/*
The chart-managed Secret's data: {key: value} for every secret value set in config.
Empty when existingSecret is used; a secret value in config is then an error, since
it would be silently ignored.
*/}}
{{- define "fab.secretData" -}}
{{- $data := dict }}
{{- $existing := .Values.existingSecret }}
{{- range $i, $bot := .Values.config.bots }}
{{- range $field, $suffix := dict "webhook_url" "webhook-url" "secret" "secret" "proxy_url" "proxy-url" }}
{{- $value := get $bot $field }}
{{- if $value }}
{{- if $existing }}
{{- fail (printf "config.bots[%d].%s is set, but existingSecret is used: put it in Secret %s under key %s-%s and list that key in existingSecretKeys" $i $field $existing $bot.name $suffix) }}
{{- end }}
{{- $_ := set $data (printf "%s-%s" $bot.name $suffix) (toString $value) }}
{{- end }}
{{- end }}
{{- end }}
{{- range $i, $app := .Values.config.apps }}
{{- range $field, $suffix := dict "app_secret" "secret" "encrypt_key" "encrypt-key" "verification_token" "verification-token" }}
{{- $value := get $app $field }}
{{- if $value }}
{{- if $existing }}
{{- fail (printf "config.apps[%d].%s is set, but existingSecret is used: put it in Secret %s under key app-%s-%s and list that key in existingSecretKeys" $i $field $existing $app.name $suffix) }}
{{- end }}
{{- $_ := set $data (printf "app-%s-%s" $app.name $suffix) (toString $value) }}
{{- end }}
{{- end }}
{{- end }}
{{- with .Values.config.auth }}
{{- $pairs := list (list "auth.bearer_token" "auth-bearer-token" .bearer_token) }}
{{- $pairs = append $pairs (list "auth.basic.password" "auth-basic-password" (dig "basic" "password" "" .)) }}
{{- $pairs = append $pairs (list "auth.grafana_hmac.secret" "auth-grafana-hmac" (dig "grafana_hmac" "secret" "" .)) }}
{{- range $pairs }}
{{- if index . 2 }}
{{- if $existing }}
{{- fail (printf "config.%s is set, but existingSecret is used: put it in Secret %s under key %s and list that key in existingSecretKeys" (index . 0) $existing (index . 1)) }}
{{- end }}
{{- $_ := set $data (index . 1) (toString (index . 2)) }}
{{- end }}
{{- end }}
{{- end }}
{{- if include "fab.postgresOn" . }}
{{- range $pair := list (list "dsn" "postgres-dsn") (list "password" "postgres-password") }}
{{- $field := index $pair 0 }}
{{- $key := index $pair 1 }}
{{- $value := get $.Values.postgres $field }}
{{- if $value }}
{{- with $.Values.postgres.existingSecret }}
{{- fail (printf "postgres.%s is set, but postgres.existingSecret is used: put it in Secret %s and name its key in postgres.existingSecretKeys.%s" $field . $field) }}
{{- end }}
{{- if $existing }}
{{- fail (printf "postgres.%s is set, but existingSecret is used: put it in Secret %s under key %s and list that key in existingSecretKeys" $field $existing $key) }}
{{- end }}
{{- $_ := set $data $key (toString $value) }}
{{- end }}
{{- end }}
{{- end }}
{{- $data = merge $data (include "fab.actionsSecretData" . | fromJson) }}
{{- toJson $data }}
{{- end }}

{{/* The Secret keys the pod gets, as a JSON list: what the config may refer to. */}}
{{- define "fab.secretKeys" -}}
{{- if .Values.existingSecret }}
{{- toJson .Values.existingSecretKeys }}
{{- else }}
{{- include "fab.secretData" . | fromJson | keys | sortAlpha | toJson }}
{{- end }}
{{- end }}

{{/* The bots, with their secret fields replaced by files and environment references. */}}
{{- define "fab.bots" -}}
{{- $keys := include "fab.secretKeys" . | fromJsonArray }}
{{- $dir := include "fab.secretsDir" . }}
{{- $bots := list }}
{{- range $i, $bot := .Values.config.bots }}
{{- $out := omit $bot "webhook_url" "secret" "proxy_url" }}
{{- $key := printf "%s-webhook-url" $bot.name }}
{{- if has $key $keys }}{{ $_ := set $out "webhook_url_file" (printf "%s/%s" $dir $key) }}{{ end }}
{{- $key = printf "%s-secret" $bot.name }}
{{- if has $key $keys }}{{ $_ := set $out "secret_file" (printf "%s/%s" $dir $key) }}{{ end }}
{{- if has (printf "%s-proxy-url" $bot.name) $keys }}
{{- $_ := set $out "proxy_url" (printf "${BRIDGE_BOT_%d_PROXY_URL}" $i) }}
{{- end }}
{{- $bots = append $bots $out }}
{{- end }}
{{- toJson $bots }}
{{- end }}

{{/* The apps, with app_secret (and encrypt_key, verification_token) replaced by files in the Secret. */}}
{{- define "fab.apps" -}}
{{- $keys := include "fab.secretKeys" . | fromJsonArray }}
{{- $dir := include "fab.secretsDir" . }}
{{- $apps := list }}
{{- range $i, $app := .Values.config.apps }}
{{- $out := omit $app "app_secret" "encrypt_key" "verification_token" }}
{{- $key := printf "app-%s-secret" $app.name }}
{{- if not (has $key $keys) }}
{{- fail (printf "config.apps[%d] needs its secret: config.apps[%d].app_secret, or key %s in existingSecret" $i $i $key) }}
{{- end }}
{{- $_ := set $out "app_secret_file" (printf "%s/%s" $dir $key) }}
{{- /* The HTTP callback's keys (card actions): optional, files when given. */}}
{{- range $field, $suffix := dict "encrypt_key" "encrypt-key" "verification_token" "verification-token" }}
{{- $key := printf "app-%s-%s" $app.name $suffix }}
{{- if has $key $keys }}{{ $_ := set $out (printf "%s_file" $field) (printf "%s/%s" $dir $key) }}{{ end }}
{{- end }}
{{- $apps = append $apps $out }}
{{- end }}
{{- toJson $apps }}
{{- end }}

{{/*
The auth section, or an empty dict. Rendered only when the user turned some inbound
authentication on: a bridge that predates `auth:` rejects the key at start-up.
*/}}
{{- define "fab.auth" -}}
{{- $keys := include "fab.secretKeys" . | fromJsonArray }}
{{- $dir := include "fab.secretsDir" . }}
{{- $values := .Values.config.auth | default dict }}
{{- $auth := dict }}
{{- if has "auth-bearer-token" $keys }}
{{- $_ := set $auth "bearer_token_file" (printf "%s/auth-bearer-token" $dir) }}
{{- end }}
{{- $username := dig "basic" "username" "" $values }}
{{- if $username }}
{{- if not (has "auth-basic-password" $keys) }}
{{- fail "config.auth.basic.username needs a password: config.auth.basic.password, or key auth-basic-password in existingSecret" }}
{{- end }}
{{- $_ := set $auth "basic" (dict "username" $username "password_file" (printf "%s/auth-basic-password" $dir)) }}
{{- end }}
{{- if has "auth-grafana-hmac" $keys }}
{{- $hmac := omit (dig "grafana_hmac" (dict) $values) "secret" }}
{{- $_ := set $hmac "secret_file" (printf "%s/auth-grafana-hmac" $dir) }}
{{- $_ := set $auth "grafana_hmac" $hmac }}
{{- end }}
{{- toJson $auth }}
{{- end }}

{{/*
The storage section: the SQLite file on the outbox volume, or storage.postgres with the
DSN and the password as files from a Secret. A DSN built from postgres.host and its
parts carries no password, so it may stay in the ConfigMap.
*/}}
{{- define "fab.storage" -}}
{{- $pg := .Values.postgres }}
{{- /* storage.sync: left out when "always" (the bridge's default), so configs stay as before. */}}
{{- $sync := dict }}
{{- with .Values.storage }}{{ if eq (toString .sync) "interval" }}{{ $_ := set $sync "sync" "interval" }}{{ end }}{{ end }}
{{- if not (include "fab.postgresOn" .) }}
{{- if $sync }}{{ with .Values.storage.syncInterval }}{{ $_ := set $sync "sync_interval" . }}{{ end }}{{ end }}
{{- toJson (merge (dict "path" (printf "%s/outbox.db" (include "fab.dataDir" .))) $sync) }}
{{- else }}
{{- $out := dict }}
{{- if $pg.existingSecret }}
{{- $dir := include "fab.postgresSecretDir" . }}
{{- with $pg.existingSecretKeys.dsn }}{{ $_ := set $out "dsn_file" (printf "%s/%s" $dir .) }}{{ end }}
{{- with $pg.existingSecretKeys.password }}{{ $_ := set $out "password_file" (printf "%s/%s" $dir .) }}{{ end }}
{{- if not $out }}
{{- fail (printf "postgres.existingSecret is %s, but no key of it is named: set postgres.existingSecretKeys.dsn and/or postgres.existingSecretKeys.password" $pg.existingSecret) }}
{{- end }}
{{- else }}
{{- $keys := include "fab.secretKeys" . | fromJsonArray }}
{{- $dir := include "fab.secretsDir" . }}
{{- if has "postgres-dsn" $keys }}{{ $_ := set $out "dsn_file" (printf "%s/postgres-dsn" $dir) }}{{ end }}
{{- if has "postgres-password" $keys }}{{ $_ := set $out "password_file" (printf "%s/postgres-password" $dir) }}{{ end }}
{{- end }}
{{- if $out.dsn_file }}
{{- if $pg.host }}
{{- fail "postgres.host and a DSN (postgres.dsn, key postgres-dsn, or postgres.existingSecretKeys.dsn) are both set: give one of them" }}
{{- end }}
{{- else if $pg.host }}
{{- $user := "" }}{{ with $pg.user }}{{ $user = printf "%s@" . }}{{ end }}
{{- $query := "" }}{{ with $pg.sslmode }}{{ $query = printf "?sslmode=%s" . }}{{ end }}
{{- $_ := set $out "dsn" (printf "postgresql://%s%s:%d/%s%s" $user $pg.host (int $pg.port) $pg.database $query) }}
{{- else }}
{{- fail "postgres.enabled needs a database: postgres.host (with port, database, user, sslmode), or a DSN in postgres.dsn, in key postgres-dsn of existingSecret, or in postgres.existingSecret (postgres.existingSecretKeys.dsn)" }}
{{- end }}
{{- with $pg.schema }}{{ $_ := set $out "schema" . }}{{ end }}
{{- if not (kindIs "invalid" $pg.poolSize) }}{{ $_ := set $out "pool_size" (int $pg.poolSize) }}{{ end }}
{{- toJson (merge (dict "postgres" $out) $sync) }}
{{- end }}
{{- end }}

{{/* config.yaml: what the ConfigMap holds. */}}
{{- define "fab.configYaml" -}}
{{- $config := omit .Values.config "bots" "auth" "server" "delivery" "apps" "actions" }}
{{- $_ := set $config "bots" (include "fab.bots" . | fromJsonArray) }}
{{- with .Values.config.apps }}{{ $_ := set $config "apps" (include "fab.apps" $ | fromJsonArray) }}{{ end }}
{{- with .Values.config.server }}{{ $_ := set $config "server" . }}{{ end }}
{{- with .Values.config.delivery }}{{ $_ := set $config "delivery" . }}{{ end }}
{{- with .Values.config.actions }}{{ $_ := set $config "actions" (include "fab.actions" $ | fromJson) }}{{ end }}
{{- $auth := include "fab.auth" . | fromJson }}
{{- if $auth }}{{ $_ := set $config "auth" $auth }}{{ end }}
{{- $_ = set $config "storage" (include "fab.storage" . | fromJson) }}
{{- if .Values.customTemplates }}
{{- $_ = set $config "templates_dir" (include "fab.templatesDir" .) }}
{{- end }}
{{- toYaml $config }}
{{- end }}

{{/* The proxy environment variables the bots' proxy_url refer to. */}}
{{- define "fab.proxyEnv" -}}
{{- $keys := include "fab.secretKeys" . | fromJsonArray }}
{{- $secret := include "fab.secretName" . }}
{{- range $i, $bot := .Values.config.bots }}
{{- $key := printf "%s-proxy-url" $bot.name }}
{{- if has $key $keys }}
- name: {{ printf "BRIDGE_BOT_%d_PROXY_URL" $i }}
  valueFrom:
    secretKeyRef:
      name: {{ $secret }}
      key: {{ $key }}
{{- end }}
{{- end }}
{{- end }}

{{/* True (non-empty) when webhook senders must authenticate. */}}
{{- define "fab.authOn" -}}
{{- $auth := include "fab.auth" . | fromJson }}
{{- if or $auth.bearer_token_file $auth.basic }}true{{ end }}
{{- end }}

{{/*
The volume mounts of the pod's containers: the server's, and the events container's
beside it (the same config, secrets, templates, outbox and scratch directory).
*/}}
{{- define "fab.volumeMounts" -}}
{{- $postgres := include "fab.postgresOn" . }}
{{- $pg := .Values.postgres }}
{{- $caCert := and $postgres (or $pg.caCert.secret $pg.caCert.configMap) }}
- name: config
  mountPath: {{ include "fab.configDir" . }}
  readOnly: true
{{- if include "fab.secretKeys" . | fromJsonArray }}
- name: secrets
  mountPath: {{ include "fab.secretsDir" . }}
  readOnly: true
{{- end }}
{{- if .Values.customTemplates }}
- name: templates
  mountPath: {{ include "fab.templatesDir" . }}
  readOnly: true
{{- end }}
{{- if and $postgres $pg.existingSecret (or $pg.existingSecretKeys.dsn $pg.existingSecretKeys.password) }}
- name: postgres-secret
  mountPath: {{ include "fab.postgresSecretDir" . }}
  readOnly: true
{{- end }}
{{- if $caCert }}
- name: postgres-ca
  mountPath: {{ include "fab.postgresCaDir" . }}
  readOnly: true
{{- end }}
{{- if not $postgres }}
- name: outbox
  mountPath: {{ include "fab.dataDir" . }}
{{- end }}
# The root filesystem is read-only; Python and gunicorn may need a scratch directory.
- name: tmp
  mountPath: /tmp
{{- end }}

{{/*
True (non-empty) when the events container serves its /metrics (events.metrics). The
default dicts: values reused from a chart before events.metrics leave it off.
*/}}
{{- define "fab.eventsMetricsOn" -}}
{{- $events := .Values.events | default dict }}
{{- if and $events.enabled (dig "metrics" "enabled" false $events) }}true{{ end }}
{{- end }}

{{- define "fab.eventsMetricsPort" -}}
{{- $port := dig "metrics" "port" 9096 (.Values.events | default dict) | int }}
{{- if eq $port 9095 }}
{{- fail "events.metrics.port: 9095 is the server's port in the same pod: pick another (default 9096)" }}
{{- end }}
{{- $port }}
{{- end }}

{{/* Where the outbox is, for the pod's containers: PostgreSQL's TLS settings or the SQLite file. */}}
{{- define "fab.storageEnv" -}}
{{- $pg := .Values.postgres }}
{{- if include "fab.postgresOn" . }}
{{- with $pg.sslmode }}
# libpq's default for a DSN that names no sslmode; the DSN's own wins.
- name: PGSSLMODE
  value: {{ . | quote }}
{{- end }}
{{- if or $pg.caCert.secret $pg.caCert.configMap }}
- name: PGSSLROOTCERT
  value: {{ printf "%s/%s" (include "fab.postgresCaDir" .) $pg.caCert.key | quote }}
{{- end }}
{{- else }}
- name: BRIDGE_STORAGE_PATH
  value: {{ printf "%s/outbox.db" (include "fab.dataDir" .) | quote }}
{{- end }}
{{- end }}
