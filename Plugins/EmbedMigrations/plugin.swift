import Foundation
import PackagePlugin

/// Compiles the package's `sql/*.sql` migrations into the HelpDesk module, so the built tool
/// needs no source tree to migrate a database.
@main
struct EmbedMigrations: BuildToolPlugin {
  func createBuildCommands(context: PluginContext, target: Target) throws -> [Command] {
    let sqlDirectory = context.package.directoryURL.appending(path: "sql")
    let names = try FileManager.default.contentsOfDirectory(atPath: sqlDirectory.path())
      .filter { $0.hasSuffix(".sql") }
      .sorted()
    let inputs = names.map { sqlDirectory.appending(path: $0) }
    let output = context.pluginWorkDirectoryURL.appending(path: "EmbeddedMigrations.swift")
    return [
      .buildCommand(
        displayName: "Embedding \(inputs.count) migrations",
        executable: try context.tool(named: "embed-migrations").url,
        arguments: [output.path()] + inputs.map { $0.path() },
        inputFiles: inputs,
        outputFiles: [output]
      )
    ]
  }
}
