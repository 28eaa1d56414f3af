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
        // The directory, not the file list: the build plans this command once, but reruns it
        // whenever an input changes, and a new migration changes the directory.
        arguments: [output.path(), sqlDirectory.path()],
        inputFiles: [sqlDirectory] + inputs,
        outputFiles: [output]
      )
    ]
  }
}
