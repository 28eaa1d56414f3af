// A plain C interface to libphonenumber, the only code in the project that sees its C++ headers.
//
// Every function is safe to call from any thread at the same time, never throws, and writes its
// text results as NUL-terminated UTF-8 into buffers the caller provides.

#ifndef CPHONENUMBER_H
#define CPHONENUMBER_H

#include <stdbool.h>
#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__has_attribute)
#if __has_attribute(enum_extensibility)
#define CPHONE_CLOSED_ENUM __attribute__((enum_extensibility(closed)))
#endif
#endif
#ifndef CPHONE_CLOSED_ENUM
#define CPHONE_CLOSED_ENUM
#endif

/// Buffer sizes that always suffice, NUL included: an E.164 number is `+` and at most 15 digits,
/// a region code is two letters (or `001` for non-geographic numbers), and the international
/// format of a valid number is well under 48 bytes.
enum {
  CPhoneE164Capacity = 24,
  CPhoneRegionCapacity = 8,
  CPhoneFormattedCapacity = 64,
};

/// What became of a parse or a format.
typedef enum CPHONE_CLOSED_ENUM CPhoneStatus {
  /// Parsed, valid, and every result written.
  CPhoneStatusOK = 0,
  /// The text has no phone number in it (no digits, or punctuation that no number has).
  CPhoneStatusNotANumber = 1,
  /// The number starts with `+` or an international dialling prefix and then a country calling
  /// code that does not exist.
  CPhoneStatusInvalidCountryCode = 2,
  /// Too few digits for any number of its country, or only a local number without its area code.
  CPhoneStatusTooShort = 3,
  /// Too many digits for any number of its country.
  CPhoneStatusTooLong = 4,
  /// A plausible length, but no number of its country has those digits (`IsValidNumber`).
  CPhoneStatusInvalidNumber = 5,
  /// The default region is not a region code that libphonenumber knows.
  CPhoneStatusUnknownRegion = 6,
  /// The text carries an extension (e.g. `617-432-2000 #123`), which a number on record can't.
  CPhoneStatusHasExtension = 7,
  /// A result buffer was too small; nothing useful was written.
  CPhoneStatusBufferTooSmall = 8,
  /// libphonenumber failed unexpectedly (an exception or memory exhaustion).
  CPhoneStatusInternalError = 9,
} CPhoneStatus;

/// Parses `input_length` bytes of UTF-8 at `input` as a phone number written by a person, reading
/// numbers without a country code as numbers of `default_region` (ISO 3166 alpha-2, e.g. "US").
///
/// On `CPhoneStatusOK`, writes the number in E.164 form (e.g. "+16174322000") to `e164` and the
/// region it belongs to (e.g. "US") to `region`. Either output may be NULL when not wanted. On
/// any other status the outputs hold empty strings (when their capacity is at least 1).
CPhoneStatus cphone_parse(
  const char *input, size_t input_length, const char *default_region, char *e164, size_t e164_capacity,
  char *region, size_t region_capacity);

/// Writes the number given in E.164 form (as `cphone_parse` writes it) in international format for
/// display, e.g. "+1 617-432-2000", to `formatted`.
CPhoneStatus cphone_format_international(const char *e164, char *formatted, size_t formatted_capacity);

/// Whether `region` is a region code (ISO 3166 alpha-2, upper case) that libphonenumber has
/// numbering data for.
bool cphone_is_known_region(const char *region);

#ifdef __cplusplus
}
#endif

#endif
