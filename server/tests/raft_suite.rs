//! openraft's own storage test suite, case by case, run against our log
//! store and state machine on a real temporary directory.
//!
//! Every case runs but one: `get_initial_state_membership_from_log_and_sm`
//! appends entry 3 right after entry 1. openraft itself never leaves a gap
//! (it appends at the last index + 1), and our log refuses one on purpose:
//! contiguous indexes are what let recovery tell a missing record from a
//! torn write. `a_gap_is_refused` below checks that refusal instead.

use std::sync::Arc;

use chat_server::testing::{Hub, LogStore, StateMachine, StorageError, TypeConfig};
use log_format::{Archive, ArchiveConfig, Log, LogConfig};
use openraft::StorageIOError;
use openraft::testing::{StoreBuilder, Suite};

struct OnDisk;

type S = Suite<TypeConfig, LogStore, StateMachine, OnDisk, tempfile::TempDir>;

fn storage(e: impl std::error::Error + 'static) -> StorageError {
    StorageIOError::write(&e).into()
}

impl StoreBuilder<TypeConfig, LogStore, StateMachine, tempfile::TempDir> for OnDisk {
    async fn build(&self) -> Result<(tempfile::TempDir, LogStore, StateMachine), StorageError> {
        let dir = tempfile::tempdir().map_err(storage)?;
        let (log, _) = Log::open(dir.path(), LogConfig::default()).map_err(storage)?;
        let store = LogStore::open(log.clone(), dir.path()).map_err(storage)?;
        let loaded = StateMachine::load_snapshot(dir.path())
            .map_err(|e| storage(std::io::Error::other(e.to_string())))?;
        let archive = Archive::open(dir.path(), ArchiveConfig::default()).map_err(storage)?;
        let hub = Arc::new(Hub::default());
        let (sm, _) = StateMachine::restore(dir.path(), &log, None, hub, loaded, archive, 1 << 20)
            .map_err(|e| storage(std::io::Error::other(e.to_string())))?;
        Ok((dir, store, sm))
    }
}

fn run<F, Fut>(case: F)
where
    F: FnOnce(LogStore, StateMachine) -> Fut,
    Fut: Future<Output = Result<(), StorageError>>,
{
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let (_dir, store, sm) = OnDisk.build().await.unwrap();
        case(store, sm).await.unwrap();
    });
}

#[test]
fn last_membership_in_log_initial() {
    run(S::last_membership_in_log_initial);
}

#[test]
fn last_membership_in_log() {
    run(S::last_membership_in_log);
}

#[test]
fn last_membership_in_log_multi_step() {
    run(S::last_membership_in_log_multi_step);
}

#[test]
fn get_membership_initial() {
    run(S::get_membership_initial);
}

#[test]
fn get_membership_from_log_and_empty_sm() {
    run(S::get_membership_from_log_and_empty_sm);
}

#[test]
fn get_membership_from_empty_log_and_sm() {
    run(S::get_membership_from_empty_log_and_sm);
}

#[test]
fn get_membership_from_log_le_sm_last_applied() {
    run(S::get_membership_from_log_le_sm_last_applied);
}

#[test]
fn get_membership_from_log_gt_sm_last_applied_1() {
    run(S::get_membership_from_log_gt_sm_last_applied_1);
}

#[test]
fn get_membership_from_log_gt_sm_last_applied_2() {
    run(S::get_membership_from_log_gt_sm_last_applied_2);
}

#[test]
fn get_initial_state_without_init() {
    run(S::get_initial_state_without_init);
}

#[test]
fn transfer_snapshot() {
    tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(S::transfer_snapshot(&OnDisk))
        .unwrap();
}

#[test]
fn a_gap_is_refused() {
    use openraft::storage::RaftLogStorageExt;
    use openraft::testing::log_id;
    use openraft::{Entry, EntryPayload};
    let blank = |index| Entry {
        log_id: log_id(1, 0, index),
        payload: EntryPayload::Blank,
    };
    run(|mut store: LogStore, _sm| async move {
        store.blocking_append([blank(0), blank(1)]).await?;
        let err = store.blocking_append([blank(3)]).await.unwrap_err();
        assert!(err.to_string().contains("expects record 2 next"), "{err}");
        Ok(())
    });
}

#[test]
fn get_initial_state_with_state() {
    run(S::get_initial_state_with_state);
}

#[test]
fn get_initial_state_last_log_gt_sm() {
    run(S::get_initial_state_last_log_gt_sm);
}

#[test]
fn get_initial_state_last_log_lt_sm() {
    run(S::get_initial_state_last_log_lt_sm);
}

#[test]
fn get_initial_state_log_ids() {
    run(S::get_initial_state_log_ids);
}

#[test]
fn get_initial_state_re_apply_committed() {
    run(S::get_initial_state_re_apply_committed);
}

#[test]
fn save_vote() {
    run(S::save_vote);
}

#[test]
fn get_log_entries() {
    run(S::get_log_entries);
}

#[test]
fn limited_get_log_entries() {
    run(S::limited_get_log_entries);
}

#[test]
fn try_get_log_entry() {
    run(S::try_get_log_entry);
}

#[test]
fn initial_logs() {
    run(S::initial_logs);
}

#[test]
fn get_log_state() {
    run(S::get_log_state);
}

#[test]
fn get_log_id() {
    run(S::get_log_id);
}

#[test]
fn last_id_in_log() {
    run(S::last_id_in_log);
}

#[test]
fn last_applied_state() {
    run(S::last_applied_state);
}

#[test]
fn purge_logs_upto_0() {
    run(S::purge_logs_upto_0);
}

#[test]
fn purge_logs_upto_5() {
    run(S::purge_logs_upto_5);
}

#[test]
fn purge_logs_upto_20() {
    run(S::purge_logs_upto_20);
}

#[test]
fn delete_logs_since_11() {
    run(S::delete_logs_since_11);
}

#[test]
fn delete_logs_since_0() {
    run(S::delete_logs_since_0);
}

#[test]
fn append_to_log() {
    run(S::append_to_log);
}

#[test]
fn snapshot_meta() {
    run(S::snapshot_meta);
}

#[test]
fn apply_single() {
    run(S::apply_single);
}

#[test]
fn apply_multiple() {
    run(S::apply_multiple);
}
