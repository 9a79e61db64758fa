fn main() -> std::process::ExitCode {
    mcc::main()
}
