//! The committed CRD must be exactly what the Rust types generate.

use lineworks_operator::crd::{CRD_PATH, crd_yaml};

#[test]
fn committed_crd_matches_the_rust_types() {
    let generated = crd_yaml().expect("CRD renders");
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(CRD_PATH);
    let committed = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}; run `make crds`", path.display()));
    assert!(
        committed == generated,
        "{CRD_PATH} is out of date with src/api: run `make crds` and commit the result"
    );
}
