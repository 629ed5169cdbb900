//! The committed CRD must be exactly what the Rust types generate.

use lineworks_operator::crd::{CRD_PATH, crd_yaml};

/// The Helm chart ships its own copy (Helm installs `crds/` before anything else).
const CHART_CRD_PATH: &str =
    "charts/lineworks-operator/crds/lineworksnotifiers.lineworks-operator.dev.yaml";

#[test]
fn committed_crds_match_the_rust_types() {
    let generated = crd_yaml().expect("CRD renders");
    for file in [CRD_PATH, CHART_CRD_PATH] {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(file);
        let committed = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}; run `make crds`", path.display()));
        assert!(
            committed == generated,
            "{file} is out of date with src/api: run `make crds` and commit the result"
        );
    }
}
