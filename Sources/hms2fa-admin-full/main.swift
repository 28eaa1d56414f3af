import HelpDeskCLI

CLI.main()
