//! One project, two hubs on a shared Postgres database: the leader's lease, the
//! standby that takes over, and the former leader that steps down.

use crate::support::postgres;

#[test]
fn the_test_database_started_by_scripts_test_answers() {
    let mut client = postgres::client();
    let one: i32 = client.query_one("SELECT 1", &[]).expect("SELECT 1").get(0);
    assert_eq!(one, 1);
    let sync: String = client.query_one("SHOW synchronous_commit", &[]).expect("SHOW").get(0);
    assert_eq!(sync, "on", "the durability claims are about real commits");
    assert_ne!(postgres::project_name("a b"), postgres::project_name("a b"), "each call names a new project");
}
