//! The test bed itself: independent brokers, kill and restart by PID.

use std::time::Duration;

use sluice_testbed::{wire, KafkaTestbed};

#[tokio::test]
async fn brokers_are_independent_and_survive_kill_and_restart() {
    let bed = KafkaTestbed::start(2).await.expect("test bed starts");
    assert_eq!(bed.len(), 2);
    assert_ne!(bed.bootstrap(0), bed.bootstrap(1));
    assert_ne!(bed.cluster_id(0), bed.cluster_id(1));
    for i in 0..2 {
        let answer = wire::metadata(bed.port(i), Duration::from_secs(5))
            .await
            .expect("metadata");
        assert_eq!(answer.cluster_id.as_deref(), Some(bed.cluster_id(i)));
    }

    bed.create_topic(0, "only-on-zero", 2)
        .await
        .expect("create");
    let read = sluice_testbed::read_topic(&bed.bootstrap(0), "only-on-zero")
        .await
        .expect("python reads an empty topic");
    assert!(read.is_empty());
    assert!(
        sluice_testbed::read_topic(&bed.bootstrap(1), "only-on-zero")
            .await
            .is_err(),
        "the other cluster does not have the topic"
    );

    let old_pid = bed.pid(0).expect("running");
    bed.kill(0).expect("kill");
    assert_eq!(bed.pid(0), None);
    assert!(wire::metadata(bed.port(0), Duration::from_millis(500))
        .await
        .is_err());
    // The other cluster is unaffected.
    wire::metadata(bed.port(1), Duration::from_secs(5))
        .await
        .expect("broker 1 still answers");

    bed.restart(0).await.expect("restart");
    let new_pid = bed.pid(0).expect("running again");
    assert_ne!(old_pid, new_pid);
    let answer = wire::metadata(bed.port(0), Duration::from_secs(5))
        .await
        .expect("answers after restart on the same port");
    assert_eq!(answer.cluster_id.as_deref(), Some(bed.cluster_id(0)));

    let pids: Vec<u32> = (0..2).filter_map(|i| bed.pid(i)).collect();
    drop(bed);
    for pid in pids {
        assert!(
            !std::path::Path::new(&format!("/proc/{pid}")).exists()
                || std::fs::read_to_string(format!("/proc/{pid}/comm"))
                    .map_or(true, |c| c.trim() != "tansu"),
            "broker {pid} still runs after drop"
        );
    }
}
