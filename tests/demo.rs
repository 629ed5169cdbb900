//! README's first command keeps working: the demo runs end to end (control plane, emulator,
//! controller, relay) and cleans up.

#[tokio::test]
async fn the_demo_runs_end_to_end() {
    lineworks_operator::demo::run(false)
        .await
        .expect("the demo succeeds");
}
