//! The `runware` binary: everything is in the `runware_cli` library.

fn main() -> std::process::ExitCode {
    runware_cli::main()
}
