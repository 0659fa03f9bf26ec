fn main() -> std::process::ExitCode {
    singleuser_profiles::cli::main()
}
