//! Memory per configured limit (issue 17: at most 300 bytes of resident memory per limit at a
//! million limits). Counts the bytes the configuration in force holds, with a counting allocator,
//! for tenants configured as the `config_scale` benchmark configures them (one action limit each,
//! most on the same plan). One test in this binary, so no other test's allocations are counted.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};

use tollgate_core::config::{
    ConfigDocument, EmbeddedBackend, LimitEntry, LimitSpec, Snapshot, TenantDocument,
};

struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

// SAFETY: every method forwards its arguments unchanged to `System`, which upholds the
// `GlobalAlloc` contract; the only addition is an atomic counter update, which neither allocates
// nor touches the memory handed out.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = System.alloc(layout);
        if !p.is_null() {
            LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout);
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = System.realloc(ptr, layout, new_size);
        if !p.is_null() {
            LIVE.fetch_add(
                new_size as isize - layout.size() as isize,
                Ordering::Relaxed,
            );
        }
        p
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

const TENANTS: usize = 100_000;

fn doc() -> ConfigDocument {
    let plan = LimitEntry::from(LimitSpec::new(100, 60.0));
    let mut doc = ConfigDocument {
        version: 1,
        ..Default::default()
    };
    for t in 0..TENANTS {
        let mut td = TenantDocument::default();
        // Every hundredth tenant has a plan of its own.
        let spec = if t % 100 == 0 {
            LimitEntry::from(LimitSpec::new(t as u64 + 1, 60.0))
        } else {
            plan.clone()
        };
        td.actions.insert("api_call".into(), spec);
        doc.tenants.insert(format!("tenant-{t:07}"), td);
    }
    doc
}

#[tokio::test(flavor = "current_thread")]
async fn configuration_in_force_holds_at_most_300_bytes_per_limit() {
    let doc = doc();
    let base = LIVE.load(Ordering::SeqCst);
    let snap = Snapshot::from_document(&doc).unwrap();
    let per_limit = (LIVE.load(Ordering::SeqCst) - base) / TENANTS as isize;
    assert_eq!(snap.tenants.len(), TENANTS);
    // Bytes asked of the allocator (its rounding comes on top; the benchmark measures RSS).
    assert!(
        per_limit <= 300,
        "the snapshot holds {per_limit} bytes per configured limit"
    );
    assert_eq!(
        snap.tenants["tenant-0000002"].actions["api_call"].limits[0]
            .limit
            .max_requests,
        100
    );
    assert_eq!(
        snap.tenants["tenant-0000100"].actions["api_call"].limits[0]
            .limit
            .max_requests,
        101
    );
    drop(snap);

    // Loaded from the embedded store, the same: nothing of the stored document stays behind
    // (the database's page cache is bounded and counted here too).
    let dir = tempfile::tempdir().unwrap();
    let backend = EmbeddedBackend::new(dir.path()).unwrap();
    use tollgate_core::config::ConfigBackend;
    backend.save(&doc, 0).await.unwrap();
    drop(doc);
    let base = LIVE.load(Ordering::SeqCst);
    let loaded = backend.load_snapshot().await.unwrap().unwrap();
    let per_limit = (LIVE.load(Ordering::SeqCst) - base) / TENANTS as isize;
    assert_eq!(loaded.tenants.len(), TENANTS);
    assert!(
        per_limit <= 300 + (16 << 20) / TENANTS as isize,
        "loaded, the configuration holds {per_limit} bytes per configured limit"
    );
}
