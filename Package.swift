// swift-tools-version:6.0
import PackageDescription

let package = Package(
  name: "hms2fa-admin",
  platforms: [.macOS(.v13)],
  products: [
    .executable(name: "hms2fa-admin", targets: ["hms2fa-admin"]),
    .library(name: "HelpDesk", targets: ["HelpDesk"]),
  ],
  dependencies: [
    .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
    .package(url: "https://github.com/apple/swift-crypto", from: "3.12.3"),
    .package(url: "https://github.com/x-sheep/swift-property-based", from: "2.0.1"),
    .package(url: "https://github.com/yaslab/CSV.swift", from: "2.5.2"),
  ],
  targets: [
    .systemLibrary(
      name: "CLibPQ",
      pkgConfig: "libpq",
      providers: [.apt(["libpq-dev"])]
    ),
    .target(name: "Postgres", dependencies: ["CLibPQ"]),
    // libphonenumber (Debian's libphonenumber-dev, no pkg-config file) behind a plain C interface.
    .target(name: "CPhoneNumber", linkerSettings: [.linkedLibrary("phonenumber")]),
    .executableTarget(name: "embed-migrations"),
    .plugin(
      name: "EmbedMigrations",
      capability: .buildTool(),
      dependencies: ["embed-migrations"]
    ),
    .target(
      name: "HelpDesk",
      dependencies: [
        "Postgres",
        "CPhoneNumber",
        .product(name: "Crypto", package: "swift-crypto"),
        .product(name: "CSV", package: "CSV.swift"),
      ],
      plugins: ["EmbedMigrations"]
    ),
    .target(
      name: "HelpDeskCLI",
      dependencies: [
        "HelpDesk",
        "Postgres",
        .product(name: "ArgumentParser", package: "swift-argument-parser"),
      ]
    ),
    .executableTarget(name: "hms2fa-admin", dependencies: ["HelpDeskCLI"]),
    .target(name: "TestSupport", dependencies: ["Postgres", "HelpDesk"], path: "Tests/TestSupport"),
    .testTarget(name: "PostgresTests", dependencies: ["Postgres", "TestSupport"]),
    .testTarget(
      name: "HelpDeskTests",
      dependencies: [
        "HelpDesk", "Postgres", "TestSupport",
        .product(name: "PropertyBased", package: "swift-property-based"),
      ]
    ),
    .testTarget(
      name: "CLITests",
      dependencies: [
        "HelpDesk", "Postgres", "TestSupport",
        .product(name: "PropertyBased", package: "swift-property-based"),
      ]
    ),
  ],
  swiftLanguageModes: [.v6]
)
