//! The `runware` command-line tool: see `runware --help` and `src/cli/`.

fn main() -> std::process::ExitCode {
    runware_ws::cli::main()
}
