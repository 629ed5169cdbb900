//! End to end on a real one-node cluster: the image built without docker, the chart installed
//! with helm, every path run as pods.

use lineworks_control_plane::OneNodeCluster;

#[tokio::test]
async fn smoke() {
    let cluster = OneNodeCluster::start().await.expect("cluster");
    let out = cluster
        .plane()
        .kubectl()
        .args(["get", "nodes,pods", "-A", "-o", "wide"])
        .output()
        .expect("kubectl");
    println!("{}", String::from_utf8_lossy(&out.stdout));
    if std::env::var_os("HOLD").is_some() {
        std::thread::sleep(std::time::Duration::from_secs(600));
    }
}
