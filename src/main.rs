fn main() -> std::process::ExitCode {
    segbridge::cli::run()
}
