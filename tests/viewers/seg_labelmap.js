// Loads a lungcds SEG the way OHIF's Cornerstone SEG adapter does (dcmjs
// adapters.Cornerstone.Segmentation.generateToolState) onto the CT slices it was made from, and
// prints how many voxels of the label map each segment number got, as JSON:
//   node seg_labelmap.js SEG_FILE SLICES_JSON
// SLICES_JSON lists the CT slices in stack order with the metadata a Cornerstone metadata
// provider gives: sopInstanceUID, seriesInstanceUID, frameOfReferenceUID, imagePositionPatient,
// rowCosines, columnCosines, rows, columns.
"use strict";
const fs = require("fs");
const dcmjs = require("dcmjs");

const [segFile, slicesFile] = process.argv.slice(2);
const slices = JSON.parse(fs.readFileSync(slicesFile, "utf8"));
const imageIds = slices.map((slice, index) => `ct:${index}`);
const byId = new Map(imageIds.map((id, index) => [id, slices[index]]));

const metadataProvider = {
  get(type, imageId) {
    const s = byId.get(imageId);
    if (!s) return undefined;
    switch (type) {
      case "imagePlaneModule":
        return {
          rowCosines: s.rowCosines,
          columnCosines: s.columnCosines,
          imagePositionPatient: s.imagePositionPatient,
          rows: s.rows,
          columns: s.columns,
        };
      case "generalSeriesModule":
        return { seriesInstanceUID: s.seriesInstanceUID };
      case "imagePixelModule":
        return { rows: s.rows, columns: s.columns };
      case "sopCommonModule":
        return { sopInstanceUID: s.sopInstanceUID };
      case "instance":
        return {
          ImagePositionPatient: s.imagePositionPatient,
          FrameOfReferenceUID: s.frameOfReferenceUID,
          SeriesInstanceUID: s.seriesInstanceUID,
        };
      default:
        return undefined;
    }
  },
};

const bytes = fs.readFileSync(segFile);
const buffer = bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength);
const warnings = [];
console.warn = (...args) => warnings.push(args.join(" "));
let result;
try {
  result = dcmjs.adapters.Cornerstone.Segmentation.generateToolState(imageIds, buffer, metadataProvider);
} catch (error) {
  console.log(JSON.stringify({ error: String(error), warnings }));
  process.exit(0);
}
const counts = {};
for (const labelmap of result ? result.labelmapBufferArray : []) {
  for (const label of new Uint16Array(labelmap)) {
    if (label) counts[label] = (counts[label] || 0) + 1;
  }
}
console.log(JSON.stringify({ counts, labelmaps: result ? result.labelmapBufferArray.length : 0, warnings }));
