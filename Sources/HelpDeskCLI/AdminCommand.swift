import ArgumentParser

/// `hms2fa-admin`: the root command.
struct AdminCommand: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "hms2fa-admin",
    abstract: "The HMS IT Service Desk's console for the two-factor enrollment registry.",
    discussion: """
      Look people up, prove who owns a phone number, clear a stale enrollment so that \
      "Start setup" shows again, email activation links, and keep remember-me tokens tidy.

      The database comes from --database, else HMS2FA_DATABASE_URL, else libpq's defaults \
      (PGHOST, PGPORT, PGSERVICE, ~/.pgpass). Every change needs --ticket and is audited under \
      your database login.

      Examples:
        hms2fa-admin user show jd123
        hms2fa-admin user find jane --json
        hms2fa-admin audit log --account jd123 --since 7d

      Shell completion:
        hms2fa-admin --generate-completion-script bash > /etc/bash_completion.d/hms2fa-admin
      """,
    version: "0.1.0",
    subcommands: [
      UserCommand.self, PhoneCommand.self, IdentityCommand.self, EnrollmentCommand.self, ActivationCommand.self,
      RememberedCommand.self, AuditCommand.self, StaffCommand.self, AccountsCommand.self, DBCommand.self,
      JobsCommand.self, DeliveryCommand.self,
    ]
  )
}
