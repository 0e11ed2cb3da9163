{{/*
Card actions (config.actions): the silence targets' credentials, moved into the chart's
Secret (or taken from existingSecret) and read through *_file, as the apps' and auth's are:
  config.actions.alertmanagers[<i>].bearer_token   -> key actions-alertmanager-<i>-bearer-token
  config.actions.alertmanagers[<i>].basic.password -> key actions-alertmanager-<i>-basic-password
  config.actions.grafana.token                     -> key actions-grafana-token
<i> is the target's position in the list: alertmanagers have no name.
*/}}

{{/* [[value path, Secret key, inline value or ""], ...] as JSON. */}}
{{- define "fab.actionsSecretFields" -}}
{{- $actions := .Values.config.actions | default dict }}
{{- $fields := list }}
{{- range $i, $am := $actions.alertmanagers | default list }}
{{- $fields = append $fields (list (printf "actions.alertmanagers[%d].bearer_token" $i) (printf "actions-alertmanager-%d-bearer-token" $i) (get $am "bearer_token" | default "")) }}
{{- $fields = append $fields (list (printf "actions.alertmanagers[%d].basic.password" $i) (printf "actions-alertmanager-%d-basic-password" $i) (dig "basic" "password" "" $am)) }}
{{- end }}
{{- with $actions.grafana }}
{{- $fields = append $fields (list "actions.grafana.token" "actions-grafana-token" (get . "token" | default "")) }}
{{- end }}
{{- toJson $fields }}
{{- end }}

{{/* The chart's Secret's share of them: {key: value}; an error with existingSecret. */}}
{{- define "fab.actionsSecretData" -}}
{{- $data := dict }}
{{- $existing := .Values.existingSecret }}
{{- range $field := include "fab.actionsSecretFields" . | fromJsonArray }}
{{- if index $field 2 }}
{{- if $existing }}
{{- fail (printf "config.%s is set, but existingSecret is used: put it in Secret %s under key %s and list that key in existingSecretKeys" (index $field 0) $existing (index $field 1)) }}
{{- end }}
{{- $_ := set $data (index $field 1) (toString (index $field 2)) }}
{{- end }}
{{- end }}
{{- toJson $data }}
{{- end }}

{{/*
The actions section for config.yaml: each credential as a file of the Secret when its key
is there; a *_file given in the values (a path in the container, e.g. a key of
existingSecret under a name of your own) is kept as it is.
*/}}
{{- define "fab.actions" -}}
{{- $keys := include "fab.secretKeys" . | fromJsonArray }}
{{- $dir := include "fab.secretsDir" . }}
{{- $values := .Values.config.actions | default dict }}
{{- $out := omit $values "alertmanagers" "grafana" }}
{{- if hasKey $values "alertmanagers" }}
{{- $targets := list }}
{{- range $i, $am := $values.alertmanagers | default list }}
{{- $target := omit $am "bearer_token" "basic" }}
{{- $key := printf "actions-alertmanager-%d-bearer-token" $i }}
{{- if has $key $keys }}
{{- if get $am "bearer_token_file" }}
{{- fail (printf "config.actions.alertmanagers[%d]: bearer_token_file and key %s are both given: give one" $i $key) }}
{{- end }}
{{- $_ := set $target "bearer_token_file" (printf "%s/%s" $dir $key) }}
{{- end }}
{{- with get $am "basic" }}
{{- $basic := omit . "password" }}
{{- $key := printf "actions-alertmanager-%d-basic-password" $i }}
{{- if has $key $keys }}
{{- if get . "password_file" }}
{{- fail (printf "config.actions.alertmanagers[%d].basic: password_file and key %s are both given: give one" $i $key) }}
{{- end }}
{{- $_ := set $basic "password_file" (printf "%s/%s" $dir $key) }}
{{- else if not (get . "password_file") }}
{{- fail (printf "config.actions.alertmanagers[%d].basic needs a password: config.actions.alertmanagers[%d].basic.password, or key %s in existingSecret (listed in existingSecretKeys)" $i $i $key) }}
{{- end }}
{{- $_ := set $target "basic" $basic }}
{{- end }}
{{- $targets = append $targets $target }}
{{- end }}
{{- $_ := set $out "alertmanagers" $targets }}
{{- end }}
{{- with $values.grafana }}
{{- $grafana := omit . "token" }}
{{- if has "actions-grafana-token" $keys }}
{{- if get . "token_file" }}
{{- fail "config.actions.grafana: token_file and key actions-grafana-token are both given: give one" }}
{{- end }}
{{- $_ := set $grafana "token_file" (printf "%s/actions-grafana-token" $dir) }}
{{- else if not (get . "token_file") }}
{{- fail "config.actions.grafana needs a token: config.actions.grafana.token, or key actions-grafana-token in existingSecret (listed in existingSecretKeys)" }}
{{- end }}
{{- $_ := set $out "grafana" $grafana }}
{{- end }}
{{- toJson $out }}
{{- end }}
