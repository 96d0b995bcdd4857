{{/* Names, labels and the bot's pod spec, shared by the daemon and the cronjob. */}}

{{- define "image-bot.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "image-bot.fullname" -}}
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

{{- define "image-bot.selectorLabels" -}}
app.kubernetes.io/name: {{ include "image-bot.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "image-bot.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "image-bot.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "image-bot.image" -}}
{{- $tag := default .Chart.AppVersion .Values.image.tag -}}
{{- if .Values.image.digest -}}
{{ .Values.image.repository }}@{{ .Values.image.digest }}
{{- else -}}
{{ .Values.image.repository }}:{{ $tag }}
{{- end -}}
{{- end }}

{{- define "image-bot.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "image-bot.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "image-bot.sync.serviceAccountName" -}}
{{- if .Values.sync.serviceAccount.create }}
{{- default (printf "%s-sync" (include "image-bot.fullname" .)) .Values.sync.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.sync.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "image-bot.configMapName" -}}
{{- default (printf "%s-config" (include "image-bot.fullname" .)) .Values.config.existingConfigMap }}
{{- end }}

{{- define "image-bot.policiesConfigMapName" -}}
{{- default (printf "%s-policies" (include "image-bot.fullname" .)) .Values.policies.existingConfigMap }}
{{- end }}

{{/* Where the bot config file is inside the pods. */}}
{{- define "image-bot.configPath" -}}
{{- if .Values.config.git.url -}}
/etc/image-bot/config/repo/{{ .Values.config.git.path | trimPrefix "/" }}
{{- else -}}
/etc/image-bot/config/bot.yaml
{{- end -}}
{{- end }}

{{- define "image-bot.configVolume" -}}
- name: config
{{- if .Values.config.git.url }}
  emptyDir: {}
{{- else }}
  configMap:
    name: {{ include "image-bot.configMapName" . }}
{{- end }}
{{- end }}

{{/* With config.git: an init container clones the config repository before the bot starts. */}}
{{- define "image-bot.fetchConfig" -}}
{{- if .Values.config.git.url }}
initContainers:
  - name: fetch-config
    image: {{ include "image-bot.image" . }}
    imagePullPolicy: {{ .Values.image.pullPolicy }}
    command: ["git", "clone", "--quiet", "--depth=1", "--single-branch",
              "--branch={{ .Values.config.git.branch }}", "--", {{ .Values.config.git.url | quote }},
              "/etc/image-bot/config/repo"]
    env:
      {{- include "image-bot.commonEnv" . | trim | nindent 6 }}
    {{- with (include "image-bot.envFrom" .) }}
    envFrom:
      {{- . | trim | nindent 6 }}
    {{- end }}
    securityContext:
      {{- toYaml .Values.securityContext | nindent 6 }}
    resources:
      {{- toYaml .Values.resources | nindent 6 }}
    volumeMounts:
      - name: config
        mountPath: /etc/image-bot/config
      - name: tmp
        mountPath: /tmp
      {{- if .Values.credentials.ssh.existingSecret }}
      - name: ssh
        mountPath: /etc/image-bot/ssh
        readOnly: true
      {{- end }}
{{- end }}
{{- end }}

{{/* bot.yaml as rendered from values; state_dir defaults to the state volume. */}}
{{- define "image-bot.botConfig" -}}
{{- $bot := deepCopy .Values.config.bot -}}
{{- if not $bot.repositories -}}
{{- fail "config.bot.repositories: name at least one config repository (or set config.existingConfigMap)" -}}
{{- end -}}
{{- if not (hasKey $bot "state_dir") -}}
{{- $_ := set $bot "state_dir" "/var/lib/image-bot" -}}
{{- end -}}
{{- if and (eq .Values.mode "daemon") (gt (int .Values.shards) 1) -}}
{{- /* every shard's status page shows all shards: each asks the others (and itself) */ -}}
{{- $daemon := deepCopy (default (dict) $bot.daemon) -}}
{{- if not (hasKey $daemon "peers") -}}
{{- $peers := list -}}
{{- range $index := until (int $.Values.shards) -}}
{{- $peers = append $peers (printf "http://%s-shard-%d:%d" (include "image-bot.fullname" $) $index (int $.Values.service.port)) -}}
{{- end -}}
{{- $_ := set $daemon "peers" $peers -}}
{{- $_ := set $bot "daemon" $daemon -}}
{{- end -}}
{{- end -}}
{{- toYaml $bot }}
{{- end }}

{{/* Volumes every bot pod mounts; see "image-bot.volumeMounts". */}}
{{- define "image-bot.volumes" -}}
{{ include "image-bot.configVolume" . }}
{{- if eq .Values.policies.source "configMap" }}
- name: policies
  configMap:
    name: {{ include "image-bot.policiesConfigMapName" . }}
{{- end }}
{{- if .Values.credentials.ssh.existingSecret }}
- name: ssh
  secret:
    secretName: {{ .Values.credentials.ssh.existingSecret }}
    defaultMode: 288  # 0440 in octal; decimal so every YAML parser agrees
{{- end }}
- name: state
{{- if and .Values.state.existingClaim (gt (int .Values.shards) 1) }}
{{- fail "state.existingClaim: one claim cannot be shared by several shards (each needs its own state dir); use shards: 1 or the default emptyDir" }}
{{- end }}
{{- if .Values.state.existingClaim }}
  persistentVolumeClaim:
    claimName: {{ .Values.state.existingClaim }}
{{- else }}
  emptyDir:
    sizeLimit: {{ .Values.state.sizeLimit }}
{{- end }}
- name: tmp
  emptyDir: {}
{{- with .Values.extraVolumes }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "image-bot.volumeMounts" -}}
- name: config
  mountPath: /etc/image-bot/config
  readOnly: true
{{- if eq .Values.policies.source "configMap" }}
- name: policies
  mountPath: /etc/image-bot/policies
  readOnly: true
{{- end }}
{{- if .Values.credentials.ssh.existingSecret }}
- name: ssh
  mountPath: /etc/image-bot/ssh
  readOnly: true
{{- end }}
- name: state
  mountPath: /var/lib/image-bot
- name: tmp
  mountPath: /tmp
{{- with .Values.extraVolumeMounts }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Environment shared by the bot and the sync agent: credentials, git over ssh. */}}
{{- define "image-bot.commonEnv" -}}
- name: HOME
  value: /tmp
- name: XDG_STATE_HOME
  value: /var/lib
{{- if .Values.credentials.ssh.existingSecret }}
- name: GIT_SSH_COMMAND
  value: "ssh -i /etc/image-bot/ssh/identity -o IdentitiesOnly=yes -o UserKnownHostsFile=/etc/image-bot/ssh/known_hosts -o StrictHostKeyChecking=yes"
{{- end }}
{{- with .Values.credentials.env }}
{{ toYaml . }}
{{- end }}
{{- with .Values.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "image-bot.envFrom" -}}
{{- range .Values.credentials.envFromSecrets }}
- secretRef:
    name: {{ . }}
{{- end }}
{{- end }}

{{/*
The bot's pod spec. Call with (dict "root" $ "args" (list ...) "env" (list ...)).
*/}}
{{- define "image-bot.podSpec" -}}
{{- $root := .root -}}
{{- with $root.Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
serviceAccountName: {{ include "image-bot.serviceAccountName" $root }}
terminationGracePeriodSeconds: {{ $root.Values.terminationGracePeriodSeconds }}
automountServiceAccountToken: false
{{- with $root.Values.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
securityContext:
  {{- toYaml $root.Values.podSecurityContext | nindent 2 }}
{{- include "image-bot.fetchConfig" $root }}
containers:
  - name: image-bot
    image: {{ include "image-bot.image" $root }}
    imagePullPolicy: {{ $root.Values.image.pullPolicy }}
    args:
      {{- toYaml (concat .args $root.Values.extraArgs) | nindent 6 }}
    env:
      - name: IMAGE_BOT_CONFIG
        value: {{ include "image-bot.configPath" $root }}
      {{- with .env }}
      {{- toYaml . | nindent 6 }}
      {{- end }}
      {{- include "image-bot.commonEnv" $root | trim | nindent 6 }}
    {{- with (include "image-bot.envFrom" $root) }}
    envFrom:
      {{- . | trim | nindent 6 }}
    {{- end }}
    {{- if .daemon }}
    ports:
      - name: http
        containerPort: {{ $root.Values.service.port }}
        protocol: TCP
    livenessProbe:
      {{- toYaml $root.Values.livenessProbe | nindent 6 }}
    readinessProbe:
      {{- toYaml $root.Values.readinessProbe | nindent 6 }}
    {{- end }}
    securityContext:
      {{- toYaml $root.Values.securityContext | nindent 6 }}
    resources:
      {{- toYaml $root.Values.resources | nindent 6 }}
    volumeMounts:
      {{- include "image-bot.volumeMounts" $root | trim | nindent 6 }}
volumes:
  {{- include "image-bot.volumes" $root | trim | nindent 2 }}
{{- with $root.Values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $root.Values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $root.Values.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/* Pod annotations: a checksum of the rendered config so a change rolls the pods. */}}
{{- define "image-bot.podAnnotations" -}}
{{- if not (or .Values.config.existingConfigMap .Values.config.git.url) }}
checksum/config: {{ include "image-bot.botConfig" . | sha256sum }}
{{- end }}
{{- if and (eq .Values.policies.source "configMap") (not .Values.policies.existingConfigMap) }}
checksum/policies: {{ toYaml .Values.policies.files | sha256sum }}
{{- end }}
{{- with .Values.podAnnotations }}
{{ toYaml . }}
{{- end }}
{{- end }}
