// The C interface of CPhoneNumber.h over libphonenumber's PhoneNumberUtil.
//
// PhoneNumberUtil::GetInstance() creates the utility once (pthread_once) and its const methods
// used here keep no mutable state of their own, so concurrent calls are safe. Nothing here may
// let a C++ exception reach the C caller: every entry point catches everything.

#include "CPhoneNumber.h"

#include <phonenumbers/phonenumber.pb.h>
#include <phonenumbers/phonenumberutil.h>

#include <cstring>
#include <set>
#include <string>

namespace {

using i18n::phonenumbers::PhoneNumber;
using i18n::phonenumbers::PhoneNumberUtil;

const PhoneNumberUtil &util() { return *PhoneNumberUtil::GetInstance(); }

const std::set<std::string> &supportedRegions() {
  static const std::set<std::string> regions = [] {
    std::set<std::string> result;
    util().GetSupportedRegions(&result);
    return result;
  }();
  return regions;
}

bool isKnownRegion(const char *region) {
  return region != nullptr && supportedRegions().count(std::string(region)) > 0;
}

// Makes each non-NULL output an empty string, so that a failed call leaves nothing stale behind.
void clear(char *buffer, size_t capacity) {
  if (buffer != nullptr && capacity > 0) buffer[0] = '\0';
}

// Copies `text` and its NUL into `buffer`, or reports that it does not fit.
bool copyOut(const std::string &text, char *buffer, size_t capacity) {
  if (buffer == nullptr) return true;
  if (text.size() >= capacity) {
    clear(buffer, capacity);
    return false;
  }
  std::memcpy(buffer, text.data(), text.size());
  buffer[text.size()] = '\0';
  return true;
}

CPhoneStatus statusForParseError(PhoneNumberUtil::ErrorType error) {
  switch (error) {
  case PhoneNumberUtil::NO_PARSING_ERROR: return CPhoneStatusOK;
  case PhoneNumberUtil::INVALID_COUNTRY_CODE_ERROR: return CPhoneStatusInvalidCountryCode;
  case PhoneNumberUtil::NOT_A_NUMBER: return CPhoneStatusNotANumber;
  case PhoneNumberUtil::TOO_SHORT_AFTER_IDD:
  case PhoneNumberUtil::TOO_SHORT_NSN: return CPhoneStatusTooShort;
  case PhoneNumberUtil::TOO_LONG_NSN: return CPhoneStatusTooLong;
  }
  return CPhoneStatusNotANumber;
}

// Why a number that parsed is still not a valid one. A length that fits only local numbers (a US
// number without its area code) counts as too short: the person left out part of the number.
CPhoneStatus statusForInvalidNumber(const PhoneNumber &number) {
  switch (util().IsPossibleNumberWithReason(number)) {
  case PhoneNumberUtil::INVALID_COUNTRY_CODE: return CPhoneStatusInvalidCountryCode;
  case PhoneNumberUtil::TOO_SHORT:
  case PhoneNumberUtil::IS_POSSIBLE_LOCAL_ONLY: return CPhoneStatusTooShort;
  case PhoneNumberUtil::TOO_LONG: return CPhoneStatusTooLong;
  case PhoneNumberUtil::IS_POSSIBLE:
  case PhoneNumberUtil::INVALID_LENGTH: return CPhoneStatusInvalidNumber;
  }
  return CPhoneStatusInvalidNumber;
}

CPhoneStatus parse(
  const char *input, size_t input_length, const char *default_region, char *e164, size_t e164_capacity,
  char *region, size_t region_capacity) {
  if (!isKnownRegion(default_region)) return CPhoneStatusUnknownRegion;
  if (input == nullptr || input_length == 0) return CPhoneStatusNotANumber;
  PhoneNumber number;
  const PhoneNumberUtil::ErrorType error = util().Parse(std::string(input, input_length), default_region, &number);
  if (error != PhoneNumberUtil::NO_PARSING_ERROR) return statusForParseError(error);
  if (number.has_extension()) return CPhoneStatusHasExtension;
  if (!util().IsValidNumber(number)) return statusForInvalidNumber(number);
  std::string formatted;
  util().Format(number, PhoneNumberUtil::E164, &formatted);
  std::string regionCode;
  util().GetRegionCodeForNumber(number, &regionCode);
  if (!copyOut(formatted, e164, e164_capacity) || !copyOut(regionCode, region, region_capacity)) {
    clear(e164, e164_capacity);
    clear(region, region_capacity);
    return CPhoneStatusBufferTooSmall;
  }
  return CPhoneStatusOK;
}

CPhoneStatus formatInternational(const char *e164, char *formatted, size_t formatted_capacity) {
  if (e164 == nullptr || e164[0] != '+') return CPhoneStatusNotANumber;
  PhoneNumber number;
  // "ZZ" is the unknown region: a number starting with + needs none.
  const PhoneNumberUtil::ErrorType error = util().Parse(std::string(e164), "ZZ", &number);
  if (error != PhoneNumberUtil::NO_PARSING_ERROR) return statusForParseError(error);
  if (!util().IsValidNumber(number)) return statusForInvalidNumber(number);
  std::string text;
  util().Format(number, PhoneNumberUtil::INTERNATIONAL, &text);
  return copyOut(text, formatted, formatted_capacity) ? CPhoneStatusOK : CPhoneStatusBufferTooSmall;
}

}  // namespace

extern "C" CPhoneStatus cphone_parse(
  const char *input, size_t input_length, const char *default_region, char *e164, size_t e164_capacity,
  char *region, size_t region_capacity) {
  clear(e164, e164_capacity);
  clear(region, region_capacity);
  try {
    return parse(input, input_length, default_region, e164, e164_capacity, region, region_capacity);
  } catch (...) {
    clear(e164, e164_capacity);
    clear(region, region_capacity);
    return CPhoneStatusInternalError;
  }
}

extern "C" CPhoneStatus cphone_format_international(const char *e164, char *formatted, size_t formatted_capacity) {
  clear(formatted, formatted_capacity);
  try {
    return formatInternational(e164, formatted, formatted_capacity);
  } catch (...) {
    clear(formatted, formatted_capacity);
    return CPhoneStatusInternalError;
  }
}

extern "C" bool cphone_is_known_region(const char *region) {
  try {
    return isKnownRegion(region);
  } catch (...) {
    return false;
  }
}
