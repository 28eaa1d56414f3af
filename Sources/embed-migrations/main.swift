import Foundation

// Usage: embed-migrations OUTPUT.swift (FILE.sql | DIRECTORY)…
// Writes a Swift file declaring `embeddedMigrations`: (file name, contents) in name order. A
// directory stands for every .sql file in it, read when the command runs: the build reruns the
// command when the directory changes, so a migration added since the build was planned is
// embedded too.

let arguments = CommandLine.arguments.dropFirst()
guard let outputPath = arguments.first else {
  FileHandle.standardError.write(Data("usage: embed-migrations OUTPUT.swift (FILE.sql | DIRECTORY)...\n".utf8))
  exit(64)
}

func swiftLiteral(_ text: String) -> String {
  var literal = "\""
  for scalar in text.unicodeScalars {
    switch scalar {
    case "\\": literal += "\\\\"
    case "\"": literal += "\\\""
    case "\n": literal += "\\n"
    case "\r": literal += "\\r"
    case "\t": literal += "\\t"
    case _ where scalar.value < 0x20 || scalar.value == 0x7F:
      literal += "\\u{\(String(scalar.value, radix: 16))}"
    default: literal.unicodeScalars.append(scalar)
    }
  }
  return literal + "\""
}

var source = "// Generated from sql/ at build time. Do not edit.\n\n"
source += "let embeddedMigrations: [(name: String, sql: String)] = [\n"
var paths: Set<String> = []
for argument in arguments.dropFirst() {
  var isDirectory: ObjCBool = false
  if FileManager.default.fileExists(atPath: argument, isDirectory: &isDirectory), isDirectory.boolValue {
    do {
      for name in try FileManager.default.contentsOfDirectory(atPath: argument) where name.hasSuffix(".sql") {
        paths.insert((argument as NSString).appendingPathComponent(name))
      }
    } catch {
      FileHandle.standardError.write(Data("embed-migrations: cannot list \(argument): \(error)\n".utf8))
      exit(66)
    }
  } else {
    paths.insert(argument)
  }
}
for path in paths.sorted(by: { ($0 as NSString).lastPathComponent < ($1 as NSString).lastPathComponent }) {
  let name = (path as NSString).lastPathComponent
  do {
    let contents = try String(contentsOfFile: path, encoding: .utf8)
    source += "  (name: \(swiftLiteral(name)), sql: \(swiftLiteral(contents))),\n"
  } catch {
    FileHandle.standardError.write(Data("embed-migrations: cannot read \(path): \(error)\n".utf8))
    exit(65)
  }
}
source += "]\n"

do {
  try source.write(toFile: outputPath, atomically: true, encoding: .utf8)
} catch {
  FileHandle.standardError.write(Data("embed-migrations: cannot write \(outputPath): \(error)\n".utf8))
  exit(73)
}
