//! `blobgc_distinct(fingerprint)`: the distinct fingerprints, estimated by the same sketch as
//! the in-process spill's ([`Sketch`]), so a filter sized on a cluster is sized exactly as in
//! this process, and the same salt and shards build the same filter in both.

use super::{check_fingerprint_type, fingerprints};
use crate::filter::Sketch;
use arrow::array::{ArrayRef, AsArray};
use arrow::datatypes::{DataType, Field, FieldRef};
use datafusion::common::{Result, ScalarValue, exec_datafusion_err};
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::utils::format_state_name;
use datafusion::logical_expr::{Accumulator, AggregateUDFImpl, Signature, Volatility};
use std::sync::Arc;

const DISTINCT: &str = "blobgc_distinct";

#[derive(Debug, PartialEq, Eq, Hash)]
pub(super) struct Distinct {
    signature: Signature,
}

impl Distinct {
    pub fn new() -> Self {
        Distinct {
            signature: Signature::any(1, Volatility::Immutable),
        }
    }
}

impl AggregateUDFImpl for Distinct {
    fn name(&self) -> &str {
        DISTINCT
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, args: &[DataType]) -> Result<DataType> {
        check_fingerprint_type(&args[0], DISTINCT)?;
        Ok(DataType::UInt64)
    }

    fn state_fields(&self, args: StateFieldsArgs) -> Result<Vec<FieldRef>> {
        Ok(vec![Arc::new(Field::new(
            format_state_name(args.name, "registers"),
            DataType::Binary,
            true,
        ))])
    }

    fn accumulator(&self, _: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        Ok(Box::new(SketchAccumulator(Sketch::default())))
    }
}

#[derive(Debug)]
struct SketchAccumulator(Sketch);

impl Accumulator for SketchAccumulator {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        fingerprints(&values[0])?
            .iter()
            .flatten()
            .for_each(|fp| self.0.add(fp));
        Ok(())
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        for registers in states[0].as_binary::<i32>().iter().flatten() {
            let other = Sketch::from_registers(registers)
                .map_err(|e| exec_datafusion_err!("{DISTINCT}: {e}"))?;
            self.0.merge(&other);
        }
        Ok(())
    }

    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        Ok(vec![ScalarValue::Binary(Some(self.0.registers().to_vec()))])
    }

    fn evaluate(&mut self) -> Result<ScalarValue> {
        Ok(ScalarValue::UInt64(Some(self.0.estimate())))
    }

    fn size(&self) -> usize {
        std::mem::size_of_val(self) + self.0.registers().len()
    }
}
