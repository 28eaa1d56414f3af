// swift-tools-version:6.0
import PackageDescription

let package = Package(
  name: "hms2fa-admin",
  products: [
    .executable(name: "hms2fa-admin", targets: ["hms2fa-admin"]),
    .library(name: "HelpDesk", targets: ["HelpDesk"]),
  ],
  dependencies: [
    .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
    .package(url: "https://github.com/apple/swift-crypto", from: "3.12.3"),
    .package(url: "https://github.com/x-sheep/swift-property-based", from: "2.0.1"),
  ],
  targets: [
    // libpq, as pkg-config finds it (Debian's libpq-dev).
    .systemLibrary(name: "CLibPQ", pkgConfig: "libpq", providers: [.apt(["libpq-dev"])]),
    // A small Swift layer over libpq; knows nothing about 2FA.
    .target(name: "Postgres", dependencies: ["CLibPQ"]),
    // libphonenumber (Debian's libphonenumber-dev, which ships no pkg-config file) behind a plain
    // C interface; its shared library brings protobuf, abseil and ICU along.
    .target(name: "CPhoneNumber", linkerSettings: [.linkedLibrary("phonenumber")]),
    // Embeds sql/*.sql into HelpDesk, so an installed binary needs no source tree.
    .executableTarget(name: "embed-migrations"),
    .plugin(name: "EmbedMigrations", capability: .buildTool(), dependencies: ["embed-migrations"]),
    // The domain: every job, the delivery service, values parsed once at the edge.
    .target(
      name: "HelpDesk",
      dependencies: [
        "Postgres", "CPhoneNumber",
        .product(name: "Crypto", package: "swift-crypto"),
      ],
      plugins: ["EmbedMigrations"]
    ),
    // The commands: parsing, prompts, output, exit codes.
    .target(
      name: "HelpDeskCLI",
      dependencies: ["HelpDesk", "Postgres", .product(name: "ArgumentParser", package: "swift-argument-parser")]
    ),
    .executableTarget(name: "hms2fa-admin", dependencies: ["HelpDeskCLI"]),
    .target(name: "TestSupport", dependencies: ["Postgres", "HelpDesk"], path: "Tests/TestSupport"),
    .testTarget(name: "PostgresTests", dependencies: ["Postgres", "TestSupport"]),
    .testTarget(
      name: "HelpDeskTests",
      dependencies: [
        "HelpDesk", "Postgres", "TestSupport", .product(name: "PropertyBased", package: "swift-property-based"),
      ]
    ),
    .testTarget(
      name: "CLITests",
      dependencies: [
        "HelpDesk", "HelpDeskCLI", "Postgres", "TestSupport",
        .product(name: "PropertyBased", package: "swift-property-based"),
      ]
    ),
  ],
  swiftLanguageModes: [.v6]
)
