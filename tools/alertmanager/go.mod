// Alertmanager and amtool for the Alertmanager receiver test (tests/alertmanager.rs), pinned here
// by version and checksum. scripts/alertmanager-binaries.sh builds both from this module's source:
// its web UI (ui/app/dist, made by npm in Alertmanager's release process) is not in the Go module,
// so the script builds a copy with a placeholder page in its place. The test needs no UI.
module lineworks-operator.dev/tools/alertmanager

go 1.26.0

require github.com/prometheus/alertmanager v0.35.0
