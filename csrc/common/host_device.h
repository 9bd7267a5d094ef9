// KDEKIT_HOST_DEVICE: functions of csrc/common/ compile for the host and, under nvcc, for the device too.
#pragma once

#ifdef __CUDACC__
#define KDEKIT_HOST_DEVICE __host__ __device__
#else
#define KDEKIT_HOST_DEVICE
#endif
