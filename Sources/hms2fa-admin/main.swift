import HelpDeskCore

FrontEnd.main()
