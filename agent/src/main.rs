fn main() -> std::process::ExitCode {
    geowall::cli::main()
}
