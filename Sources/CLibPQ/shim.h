#ifndef HMS2FA_CLIBPQ_SHIM_H
#define HMS2FA_CLIBPQ_SHIM_H
#include <libpq-fe.h>
#endif
