//! mimalloc's options for the long-running components. mimalloc reads them from its environment when the process
//! starts, before `main`, so a component that wants other values than the defaults re-executes itself once (same
//! PID, same arguments) with the ones the operator did not set; an operator's own values always win.

use std::os::unix::process::CommandExt;

/// Arena memory is committed as it is used instead of up front. mimalloc commits each new arena eagerly by default,
/// and where transparent huge pages are on (`madvise` mode included) an eagerly committed arena is backed by 2 MiB
/// pages at once: an idle node proxy held 8 MiB of them (RSS 20 MiB; 12 MiB without, see ARCHITECTURE.md,
/// "Performance").
pub const LAZY_ARENA_COMMIT: (&str, &str) = ("MIMALLOC_ARENA_EAGER_COMMIT", "0");

/// Freed memory goes back to the system at once instead of after mimalloc's delay, which only runs out when the
/// freeing thread allocates again: right for memory that comes and goes in bursts (the control plane's syncs).
pub const PROMPT_PURGE: (&str, &str) = ("MIMALLOC_PURGE_DELAY", "0");

/// Re-executes the process with `options` added to its environment, unless each is already set (or the binary was
/// built without mimalloc). Returns only when no re-execution was needed or it failed; a failure is reported and
/// not fatal: the component runs as well, with mimalloc's defaults.
pub fn reexec_with(component: &str, options: &[(&str, &str)]) {
    if !cfg!(feature = "mimalloc") {
        return;
    }
    let missing: Vec<_> = options
        .iter()
        .filter(|(name, _)| std::env::var_os(name).is_none())
        .collect();
    if missing.is_empty() {
        return;
    }
    let mut argv = std::env::args_os();
    let arg0 = argv.next().unwrap_or_default();
    let mut command = std::process::Command::new("/proc/self/exe");
    command.arg0(arg0).args(argv);
    for (name, value) in &missing {
        command.env(name, value);
    }
    let error = command.exec();
    let names: Vec<_> = missing.iter().map(|(name, value)| format!("{name}={value}")).collect();
    eprintln!(
        "ambit {component}: cannot re-execute with {} ({error}); continuing with mimalloc's defaults",
        names.join(" ")
    );
}
