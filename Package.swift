// swift-tools-version:6.0
import PackageDescription

let packedRelocations: [LinkerSetting] = [
  .unsafeFlags(["-use-ld=lld", "-Xlinker", "-z", "-Xlinker", "pack-relative-relocs"])
]

let package = Package(
  name: "hms2fa-admin",
  platforms: [.macOS(.v13)],
  products: [
    .executable(name: "hms2fa-admin", targets: ["hms2fa-admin"]),
    .executable(name: "hms2fa-admin-full", targets: ["hms2fa-admin-full"]),
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
    // libphonenumber (Debian's libphonenumber-dev, no pkg-config file) behind a plain C interface,
    // linked from its static archives with what it needs (protobuf, abseil, ICU): as shared
    // libraries, the dynamic loader spent several milliseconds resolving their C++ symbols at
    // every start, also of commands that never parse a number (`user show`; see Benchmarks).
    // Dependents after what depends on them, for linkers that read archives once, in order.
    .target(
      name: "CPhoneNumber",
      linkerSettings: [
        ":libphonenumber.a", ":libprotobuf.a", ":libicui18n.a", ":libicuuc.a", ":libicudata.a",
        ":libabsl_hash.a", ":libabsl_city.a", ":libabsl_low_level_hash.a", ":libabsl_raw_hash_set.a",
        ":libabsl_strings.a", ":libabsl_strings_internal.a", ":libabsl_throw_delegate.a",
        ":libabsl_raw_logging_internal.a", "z", "dl", "pthread",
      ].map { .linkedLibrary($0) }
    ),
    .executableTarget(name: "embed-migrations"),
    .plugin(
      name: "EmbedMigrations",
      capability: .buildTool(),
      dependencies: ["embed-migrations"]
    ),
    // What `user show` needs, and nothing that imports Foundation: the front end links only this
    // (FrontEnd.swift).
    .target(name: "HelpDeskCore", dependencies: ["Postgres"]),
    .target(
      name: "HelpDesk",
      dependencies: [
        "HelpDeskCore",
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
    // The executables are linked by lld with packed relative relocations (DT_RELR): the 87 000
    // relative relocations of the full binary, which the dynamic loader reads at every start,
    // take 16 KB instead of 2 MB (README, Benchmarks). The loader (glibc 2.36 or later) must
    // understand DT_RELR.
    // `hms2fa-admin` answers `user show` itself and runs `hms2fa-admin-full` for the rest.
    .executableTarget(name: "hms2fa-admin", dependencies: ["HelpDeskCore"], linkerSettings: packedRelocations),
    .executableTarget(name: "hms2fa-admin-full", dependencies: ["HelpDeskCLI"], linkerSettings: packedRelocations),
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
        "HelpDesk", "HelpDeskCLI", "HelpDeskCore", "Postgres", "TestSupport",
        .product(name: "PropertyBased", package: "swift-property-based"),
      ]
    ),
  ],
  swiftLanguageModes: [.v6]
)
