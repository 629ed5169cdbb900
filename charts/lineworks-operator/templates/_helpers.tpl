{{- define "lwo.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "lwo.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "lwo.selector" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: controller
{{- end -}}

{{- define "lwo.relaySelector" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: relay
{{- end -}}

{{- define "lwo.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "lwo.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "lwo.watchNamespace" -}}
{{- default .Release.Namespace .Values.rbac.watchNamespace -}}
{{- end -}}

{{- define "lwo.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/* The restricted Pod Security Standard, for every pod of the chart. */}}
{{- define "lwo.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
fsGroup: 65532
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "lwo.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
capabilities:
  drop: ["ALL"]
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* Cluster-scoped objects carry the namespace too: two releases of one name never collide. */}}
{{- define "lwo.clusterName" -}}
{{- printf "%s-%s" (include "lwo.fullname" .) .Release.Namespace | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* How LINE WORKS calls leave the pod: an egress proxy and extra CAs (both containers). */}}
{{- define "lwo.egressEnv" -}}
{{- with .Values.proxy.https }}
- name: HTTPS_PROXY
  value: {{ . | quote }}
{{- end }}
{{- with .Values.proxy.noProxy }}
- name: NO_PROXY
  value: {{ . | quote }}
{{- end }}
{{- if or .Values.extraCABundle.configMap .Values.extraCABundle.secret }}
- name: LINEWORKS_EXTRA_CA_FILE
  value: /etc/lineworks-operator/extra-ca/{{ .Values.extraCABundle.key }}
{{- end }}
{{- end -}}

{{- define "lwo.extraCAMount" -}}
{{- if or .Values.extraCABundle.configMap .Values.extraCABundle.secret }}
volumeMounts:
  - name: extra-ca
    mountPath: /etc/lineworks-operator/extra-ca
    readOnly: true
{{- end }}
{{- end -}}

{{- define "lwo.extraCAVolume" -}}
{{- if and .Values.extraCABundle.configMap .Values.extraCABundle.secret }}
{{- fail "extraCABundle: set configMap or secret, not both" }}
{{- end }}
{{- with .Values.extraCABundle.configMap }}
volumes:
  - name: extra-ca
    configMap:
      name: {{ . }}
      items:
        - key: {{ $.Values.extraCABundle.key }}
          path: {{ $.Values.extraCABundle.key }}
{{- end }}
{{- with .Values.extraCABundle.secret }}
volumes:
  - name: extra-ca
    secret:
      secretName: {{ . }}
      items:
        - key: {{ $.Values.extraCABundle.key }}
          path: {{ $.Values.extraCABundle.key }}
{{- end }}
{{- end -}}
