//! The devstack passes each service its environment as flags; that is only the same
//! thing if every flag is its environment variable in lower case with dashes.

use clap::CommandFactory;

fn assert_flags_mirror_env(command: clap::Command) {
    let name = command.get_name().to_string();
    for arg in command.get_arguments() {
        let Some(env) = arg.get_env() else { continue };
        let expected = env.to_string_lossy().to_ascii_lowercase().replace('_', "-");
        assert_eq!(
            arg.get_long(),
            Some(expected.as_str()),
            "{name}: flag of {env:?}"
        );
    }
}

#[test]
fn every_service_flag_is_its_environment_variable() {
    assert_flags_mirror_env(mercato_auth::Config::command());
    assert_flags_mirror_env(mercato_product::Config::command());
    assert_flags_mirror_env(mercato_order::Config::command());
    assert_flags_mirror_env(mercato_payment::Config::command());
}
