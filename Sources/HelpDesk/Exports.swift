@_exported import HelpDeskCore
