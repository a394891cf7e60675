{{- define "toolhive-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "toolhive-operator.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name (include "toolhive-operator.name" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "toolhive-operator.labels" -}}
app.kubernetes.io/name: {{ include "toolhive-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "toolhive-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "toolhive-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "toolhive-operator.serviceAccountName" -}}
{{- if .Values.operator.serviceAccount.create -}}
{{- default (include "toolhive-operator.fullname" .) .Values.operator.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.operator.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* The stem of every cluster-scoped name (and of the bindings the install puts in
     the namespaces it serves): the fullname when it already starts with the release name
     (the default install keeps toolhive-operator-*), else the release name in front,
     so a second release with the Go chart's fixed fullnameOverride gets its own. */}}
{{- define "toolhive-operator.clusterName" -}}
{{- $full := include "toolhive-operator.fullname" . -}}
{{- if or (eq $full .Release.Name) (hasPrefix (printf "%s-" .Release.Name) $full) -}}
{{- $full -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $full | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "toolhive-operator.managerRole" -}}
{{- printf "%s-manager-role" (include "toolhive-operator.clusterName" .) -}}
{{- end -}}

{{- define "toolhive-operator.managerRoleBinding" -}}
{{- printf "%s-manager-rolebinding" (include "toolhive-operator.clusterName" .) -}}
{{- end -}}

{{- define "toolhive-operator.leaderRole" -}}
{{- default (printf "%s-leader-election-role" (include "toolhive-operator.fullname" .)) .Values.operator.leaderElectionRole.name -}}
{{- end -}}

{{- define "toolhive-operator.leaderRoleBinding" -}}
{{- default (printf "%s-leader-election-rolebinding" (include "toolhive-operator.fullname" .)) .Values.operator.leaderElectionRole.binding.name -}}
{{- end -}}

{{- define "toolhive-operator.webhookName" -}}
{{- printf "%s-webhook" (include "toolhive-operator.fullname" .) -}}
{{- end -}}

{{/* The webhook configurations, admission policies and the ClusterRole that may
     publish their caBundle: cluster-scoped, so named per release. */}}
{{- define "toolhive-operator.webhookConfigName" -}}
{{- printf "%s-webhook" (include "toolhive-operator.clusterName" .) -}}
{{- end -}}

{{/* Which namespaces the install's admission applies to: in namespace mode only those
     it serves (an install that is down blocks nobody else); in cluster mode all but
     its own and kube-system. */}}
{{- define "toolhive-operator.servedNamespaceSelector" -}}
namespaceSelector:
  matchExpressions:
    - key: kubernetes.io/metadata.name
{{- if eq .Values.operator.rbac.scope "namespace" }}
      operator: In
      values:
        {{- range .Values.operator.rbac.allowedNamespaces }}
        - {{ . }}
        {{- end }}
{{- else }}
      operator: NotIn
      values:
        {{- include "toolhive-operator.excludedNamespaces" . | nindent 8 }}
{{- end }}
{{- end -}}

{{/* Namespaces the webhook configurations never apply to. */}}
{{- define "toolhive-operator.excludedNamespaces" -}}
- {{ .Release.Namespace }}
- kube-system
{{- end -}}

{{/* "true" when the tenancy policy gives resource defaults anywhere: only the mutating
     webhook can fill those in. The team label and mcpPort are simple enough for the API
     server's own MutatingAdmissionPolicy. */}}
{{- define "toolhive-operator.policyHasResourceDefaults" -}}
{{- $policy := .Values.tenancy.policy | default dict -}}
{{- $all := list (dig "defaults" (dict) $policy | default dict) -}}
{{- range $ns, $rules := (dig "namespaces" (dict) $policy | default dict) }}{{ $all = append $all ($rules | default dict) }}{{ end -}}
{{- range $tenant := (get $policy "tenants" | default list) }}{{ $all = append $all (dig "rules" (dict) ($tenant | default dict) | default dict) }}{{ end -}}
{{- $found := false -}}
{{- range $rules := $all -}}
{{- range $which := list "proxyResources" "mcpResources" -}}
{{- $defaults := dig $which "defaults" (dict) $rules | default dict -}}
{{- if or (dig "requests" (dict) $defaults) (dig "limits" (dict) $defaults) }}{{ $found = true }}{{ end -}}
{{- end -}}
{{- end -}}
{{- if $found }}true{{ end -}}
{{- end -}}

{{/* CEL: the object lacks a default the API server's policy or the mutating webhook
     fills in (the team label, or mcpPort on an HTTP transport). One expression for
     both, so they are called for the same objects. */}}
{{- define "toolhive-operator.defaultsMissing" -}}
!has(object.metadata.labels) || !('toolhive.stacklok.dev/team' in object.metadata.labels) || object.metadata.labels['toolhive.stacklok.dev/team'] == '' || (has(object.spec) && has(object.spec.transport) && object.spec.transport != 'stdio' && !has(object.spec.mcpPort))
{{- end -}}

{{/* CEL for the team an MCPServer in request.namespace belongs to. */}}
{{- define "toolhive-operator.teamExpression" -}}
{{- $policy := .Values.tenancy.policy | default dict -}}
{{- $teams := dict -}}
{{- range $ns, $rules := (dig "namespaces" (dict) $policy | default dict) }}{{ with ($rules | default dict).team }}{{ $_ := set $teams $ns . }}{{ end }}{{ end -}}
{{- $fallback := "request.namespace" -}}
{{- with (dig "defaults" "team" "" $policy) }}{{ $fallback = toJson . }}{{ end -}}
{{- if $teams -}}
request.namespace in {{ toJson $teams }} ? {{ toJson $teams }}[request.namespace] : {{ $fallback }}
{{- else -}}
{{ $fallback }}
{{- end -}}
{{- end -}}

{{/* The rules the operator uses; shared by the ClusterRole and the namespaced Roles. */}}
{{- define "toolhive-operator.managerRules" -}}
# Exactly what the operator's code calls: watches (list, watch), server-side apply
# (patch; create for the first apply), the finalizer patch, status apply, cleanup of
# what the proxy runner creates (list, delete) and Events.
- apiGroups: ["toolhive.stacklok.dev"]
  resources: ["mcpservers"]
  verbs: ["list", "watch", "patch"]
- apiGroups: ["toolhive.stacklok.dev"]
  resources: ["mcpservers/status"]
  verbs: ["patch"]
# MCPGroups: watched (servers' GroupRefValidated, the groups' member lists) and their
# status applied.
- apiGroups: ["toolhive.stacklok.dev"]
  resources: ["mcpgroups"]
  verbs: ["list", "watch"]
- apiGroups: ["toolhive.stacklok.dev"]
  resources: ["mcpgroups/status"]
  verbs: ["patch"]
# MCPServerEntries: watched (checked, and listed in their groups) and their status applied.
- apiGroups: ["toolhive.stacklok.dev"]
  resources: ["mcpserverentries"]
  verbs: ["list", "watch"]
- apiGroups: ["toolhive.stacklok.dev"]
  resources: ["mcpserverentries/status"]
  verbs: ["patch"]
# MCPRemoteProxies: watched (each gets a proxy, as an MCPServer) and their status
# applied; their children carry blockOwnerDeletion owner references to them.
- apiGroups: ["toolhive.stacklok.dev"]
  resources: ["mcpremoteproxies"]
  verbs: ["list", "watch"]
- apiGroups: ["toolhive.stacklok.dev"]
  resources: ["mcpremoteproxies/status"]
  verbs: ["patch"]
- apiGroups: ["toolhive.stacklok.dev"]
  resources: ["mcpremoteproxies/finalizers"]
  verbs: ["update"]
# VirtualMCPServers: watched (each gets a vMCP Deployment) and their status applied;
# their children carry blockOwnerDeletion owner references to them.
- apiGroups: ["toolhive.stacklok.dev"]
  resources: ["virtualmcpservers"]
  verbs: ["list", "watch"]
- apiGroups: ["toolhive.stacklok.dev"]
  resources: ["virtualmcpservers/status"]
  verbs: ["patch"]
- apiGroups: ["toolhive.stacklok.dev"]
  resources: ["virtualmcpservers/finalizers"]
  verbs: ["update"]
# EmbeddingServers: watched (each gets a StatefulSet and a Service) and their status
# applied; their children carry blockOwnerDeletion owner references to them.
- apiGroups: ["toolhive.stacklok.dev"]
  resources: ["embeddingservers"]
  verbs: ["list", "watch"]
- apiGroups: ["toolhive.stacklok.dev"]
  resources: ["embeddingservers/status"]
  verbs: ["patch"]
- apiGroups: ["toolhive.stacklok.dev"]
  resources: ["embeddingservers/finalizers"]
  verbs: ["update"]
# Composite tool definitions: watched in a namespace while a VirtualMCPServer there
# names one (read into the vMCP's file).
- apiGroups: ["toolhive.stacklok.dev"]
  resources: ["virtualmcpcompositetooldefinitions"]
  verbs: ["list", "watch"]
# The configuration kinds MCPServers reference (tool, telemetry, OIDC, authorization,
# webhooks, external auth): watched (resolved into the RunConfig) and their status
# applied.
- apiGroups: ["toolhive.stacklok.dev"]
  resources: ["mcptoolconfigs", "mcptelemetryconfigs", "mcpoidcconfigs", "mcpauthzconfigs", "mcpwebhookconfigs", "mcpexternalauthconfigs"]
  verbs: ["list", "watch"]
- apiGroups: ["toolhive.stacklok.dev"]
  resources: ["mcptoolconfigs/status", "mcptelemetryconfigs/status", "mcpoidcconfigs/status", "mcpauthzconfigs/status", "mcpwebhookconfigs/status", "mcpexternalauthconfigs/status"]
  verbs: ["patch"]
# The namespaces' pod-security.kubernetes.io/enforce label, for the webhook: watched
# in cluster mode; in namespace mode each allowed namespace reads only itself.
- apiGroups: [""]
  resources: ["namespaces"]
  verbs: ["get", "list", "watch"]
# Owner references with blockOwnerDeletion need update on the owner's finalizers.
- apiGroups: ["toolhive.stacklok.dev"]
  resources: ["mcpservers/finalizers"]
  verbs: ["update"]
# delete: `<name>-sa`, once its server names a ServiceAccount of its own.
- apiGroups: [""]
  resources: ["serviceaccounts"]
  verbs: ["list", "watch", "create", "patch", "delete"]
- apiGroups: ["apps"]
  resources: ["deployments"]
  verbs: ["list", "watch", "create", "patch"]
- apiGroups: ["rbac.authorization.k8s.io"]
  resources: ["roles", "rolebindings"]
  verbs: ["list", "watch", "create", "patch"]
# The API server lets the operator create each proxy runner's Role only if it holds
# every permission that Role grants (no `escalate`), so these match the runner's
# rules (src/kinds/mcpserver/resources/mod.rs proxy_role_rules); the operator itself uses a subset.
- apiGroups: [""]
  resources: ["configmaps"]
  verbs: ["get", "list", "watch", "create", "patch"]
- apiGroups: ["apps"]
  resources: ["statefulsets"]
  verbs: ["create", "delete", "get", "list", "patch", "update", "watch"]
- apiGroups: [""]
  resources: ["services"]
  verbs: ["create", "delete", "get", "list", "patch", "update", "watch"]
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["get", "list", "watch"]
- apiGroups: [""]
  resources: ["pods/log"]
  verbs: ["get"]
- apiGroups: [""]
  resources: ["pods/attach"]
  verbs: ["create", "get"]
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
{{- end -}}

{{- /* Names the operator-issued serving certificate covers: the Service's DNS names, or
       the host of webhook.url when the API server calls a URL. */}}
{{- define "toolhive-operator.webhookCertHosts" -}}
{{- $name := include "toolhive-operator.webhookName" . -}}
{{- if .Values.webhook.url -}}
{{- (urlParse .Values.webhook.url).hostname -}}
{{- else -}}
{{- printf "%s.%s.svc,%s.%s,%s" $name .Release.Namespace $name .Release.Namespace $name -}}
{{- end -}}
{{- end -}}

{{/* A named port of the operator container: operator.ports as a list of
     {name, containerPort} (the Go chart's form) or as {metrics, health, webhook}.
     Call with (list $ "metrics"). */}}
{{- define "toolhive-operator.port" -}}
{{- $root := index . 0 -}}{{- $name := index . 1 -}}
{{- $ports := $root.Values.operator.ports -}}
{{- $found := get (dict "metrics" 8080 "health" 8081 "webhook" 9443) $name -}}
{{- if kindIs "slice" $ports -}}
{{- range $ports }}{{ if eq (toString .name) $name }}{{ $found = .containerPort }}{{ end }}{{ end -}}
{{- else if kindIs "map" $ports -}}
{{- with get $ports $name }}{{ $found = . }}{{ end -}}
{{- end -}}
{{- int $found -}}
{{- end -}}

{{/*
Comma-separated names of a list of pull secrets given as names or {name} objects.
*/}}
{{- define "toolhive-operator.secretNames" -}}
{{- $names := list }}
{{- range . }}{{ if kindIs "map" . }}{{ $names = append $names .name }}{{ else }}{{ $names = append $names . }}{{ end }}{{ end }}
{{- join "," $names }}
{{- end }}
