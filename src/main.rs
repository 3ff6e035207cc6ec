//! The `sealbatch` binary: see `sealbatch --help`.

fn main() -> std::process::ExitCode {
    sealbatch::cli::main()
}
