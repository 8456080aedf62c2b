//! Without a GPU, and misuse: errors, never panics.

use super::*;

// ---- without a GPU ----------------------------------------------------------------------

#[test]
fn asking_for_a_missing_gpu_is_an_error_and_the_cpu_keeps_working() -> Result<()> {
    let count = Device::cuda_device_count();
    assert_eq!(Device::cuda_is_available(), count > 0);
    // GPU `count` never exists: with no GPU that is GPU 0.
    let missing = Device::Cuda(count);
    match Device::cuda(count) {
        Err(Error::Cuda { op, msg }) => {
            assert!(op.contains("Device::cuda"), "op `{op}`");
            if count == 0 {
                assert!(
                    msg.contains("driver"),
                    "without a GPU the error should say what about the driver failed: {msg}"
                );
            } else {
                assert!(msg.contains(&count.to_string()), "{msg}");
            }
        }
        other => panic!("Device::cuda({count}) with {count} GPUs gave {other:?}"),
    }

    let x = Tensor::<F32>::from_f32(&[1.0, -2.0, 3.0], [3])?;
    let moved = catch_unwind(AssertUnwindSafe(|| x.to_device(missing)));
    match moved {
        Ok(Err(Error::Cuda { msg, .. })) => assert!(!msg.is_empty()),
        Ok(Err(e)) => panic!("to_device({missing}) failed with a non-CUDA error: {e}"),
        Ok(Ok(_)) => panic!("to_device({missing}) succeeded with {count} GPUs"),
        Err(_) => panic!("to_device({missing}) panicked instead of returning an error"),
    }
    let f16 = x.cast::<F16>();
    assert!(f16.to_device(missing).is_err());
    // A model's move fails as a whole and leaves it on the CPU.
    let model = Linear::<F32>::new(3, 2, &mut Init::new(1));
    assert!(model.to_device(missing).is_err());
    assert!(
        model
            .parameters()
            .iter()
            .all(|p| p.value().device() == Device::Cpu)
    );

    // The CPU is unaffected.
    let y = x.relu().add(&x)?.sum();
    assert_eq!(y.to_scalar()?, 6.0); // relu(x) + x = [2, -2, 6]
    assert_eq!(
        f16.to_device(Device::Cpu)?.to_f32_vec(),
        vec![1.0, -2.0, 3.0]
    );
    let w = Parameter::new(x.clone());
    let grads = w.tensor().sqr().sum().backward()?;
    assert_eq!(grads.get(&w).unwrap().to_vec(), vec![2.0, -4.0, 6.0]);
    Ok(())
}

// ---- misuse -----------------------------------------------------------------------------

#[test]
fn mixing_devices_never_panics() -> Result<()> {
    let Some((gpu, _)) = gpu_and_seed("mixing_devices_never_panics") else {
        return Ok(());
    };
    let a = Tensor::<F32>::randn([3, 4], 1);
    let b = Tensor::<F32>::randn([4], 2);
    let want = a.add(&b)?.to_f32_vec();
    let on = a.to_device(gpu)?;
    // An error that names the devices, or (if amp moves one operand) the
    // right values; a panic is neither.
    for (what, r) in [
        ("gpu + cpu", catch_unwind(AssertUnwindSafe(|| on.add(&b)))),
        ("cpu + gpu", catch_unwind(AssertUnwindSafe(|| b.add(&on)))),
    ] {
        match r {
            Ok(Ok(y)) => assert!(rel_l2(&y.to_f32_vec(), &want) < 1e-6, "{what}"),
            Ok(Err(e)) => assert!(e.to_string().contains("cuda"), "{what}: {e}"),
            Err(_) => panic!("{what} panicked"),
        }
    }
    let w = Tensor::<F32>::randn([5, 4], 3);
    match catch_unwind(AssertUnwindSafe(|| on.matmul(&w.t()?))) {
        Ok(Ok(y)) => assert_eq!(y.dims(), &[3, 5]),
        Ok(Err(e)) => assert!(e.to_string().contains("cuda"), "matmul: {e}"),
        Err(_) => panic!("matmul of a GPU and a CPU tensor panicked"),
    }
    Ok(())
}
